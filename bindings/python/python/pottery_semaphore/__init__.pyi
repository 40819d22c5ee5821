# Public names of pottery_semaphore; the implementations are annotated inline.
from typing import Final, Tuple

from ._common import DEFAULT_KEY as DEFAULT_KEY
from ._common import Holder as Holder
from ._common import Permit as Permit
from ._common import ReplicaAck as ReplicaAck
from ._common import Status as Status
from ._common import Waiter as Waiter
from .aioprimitives import AIORedisCounter as AIORedisCounter
from .aioprimitives import AIORedisSimpleQueue as AIORedisSimpleQueue
from .aioprimitives import QueueEmpty as QueueEmpty
from .aiosemaphore import AIOSemaphore as AIOSemaphore
from .exceptions import AcquireInterruptedError as AcquireInterruptedError
from .exceptions import AuthenticationError as AuthenticationError
from .exceptions import BoundedSemaphoreError as BoundedSemaphoreError
from .exceptions import InvalidArgumentError as InvalidArgumentError
from .exceptions import NotReplicatedError as NotReplicatedError
from .exceptions import RedisUnavailableError as RedisUnavailableError
from .exceptions import QuorumIsImpossible as QuorumIsImpossible
from .exceptions import SemaphoreError as SemaphoreError
from .exceptions import RedisReplyError as RedisReplyError
from .exceptions import SemaphoreRuntimeError as SemaphoreRuntimeError
from .exceptions import WrongTypeError as WrongTypeError
from .semaphore import Semaphore as Semaphore

__all__: Final[Tuple[str, ...]]
__version__: str
