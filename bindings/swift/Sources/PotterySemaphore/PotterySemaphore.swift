// The hand-written face of the Swift SDK: a thin, idiomatic layer over the UniFFI bindings that
// `cargo xtask` generates into the PotterySemaphoreFFI target (see README.md).

import Foundation
import PotterySemaphoreFFI

/// What to open: Redis URL, key, number of permits, lease, and so on (defaults as in the host).
public typealias SemaphoreOptions = PotterySemaphoreFFI.SemaphoreOptions
/// A held permit: its token, lease deadline (Redis time, ms since the epoch) and time left.
public typealias Permit = PotterySemaphoreFFI.Permit
/// Permits, holders and waiters of the semaphore, as Redis has them.
public typealias SemaphoreStatus = PotterySemaphoreFFI.SemaphoreStatus

/// The errors of the semaphore, case for case as the generated `PotterySemaphoreFFI.SemaphoreError`.
public enum SemaphoreError: Error, Equatable, Sendable {
    case invalidArgument(String)
    case bounded(key: String, current: UInt64, initial: UInt64)
    case wrongType(String)
    case unreachable(String)
    case auth(String)
    case cancelled
    case forbidden(String)
    case redis(String)
    /// Several masters: so many of them failed that no majority is left.
    case quorum(String)
    case notReplicated(String)
    case guest(String)
    case runtime(String)

    /// The same error as thrown by calls through `Semaphore.raw`.
    public init(_ error: PotterySemaphoreFFI.SemaphoreError) {
        switch error {
        case let .InvalidArgument(message): self = .invalidArgument(message)
        case let .Bounded(key, current, initial): self = .bounded(key: key, current: current, initial: initial)
        case let .WrongType(message): self = .wrongType(message)
        case let .Unreachable(message): self = .unreachable(message)
        case let .Auth(message): self = .auth(message)
        case .Cancelled: self = .cancelled
        case let .Forbidden(message): self = .forbidden(message)
        case let .Redis(message): self = .redis(message)
        case let .Quorum(message): self = .quorum(message)
        case let .NotReplicated(message): self = .notReplicated(message)
        case let .Guest(message): self = .guest(message)
        case let .Runtime(message): self = .runtime(message)
        }
    }
}

/// Runs `body`, rethrowing the generated error type as `SemaphoreError`, and anything else the
/// bindings throw (a Rust panic is their `fileprivate` internal error) as `.runtime`.
private func translatingErrors<T>(_ body: () async throws -> T) async throws -> T {
    do {
        return try await body()
    } catch let error as PotterySemaphoreFFI.SemaphoreError {
        throw SemaphoreError(error)
    } catch {
        throw SemaphoreError.runtime(String(describing: error))
    }
}

/// A distributed counting semaphore on Redis. One handle can be shared by any number of tasks.
public final class Semaphore: Sendable {
    /// The generated object, for the calls this layer does not wrap (`status`, `permits`, ...).
    public let raw: PotterySemaphoreFFI.Semaphore

    public init(raw: PotterySemaphoreFFI.Semaphore) {
        self.raw = raw
    }

    /// Connects to Redis and opens the semaphore, creating it unless `options.create` is false.
    public static func open(_ options: SemaphoreOptions) async throws -> Semaphore {
        try await translatingErrors {
            Semaphore(raw: try await PotterySemaphoreFFI.Semaphore.openAsync(options: options))
        }
    }

    /// Takes `n` permits at once or none, waiting at most `timeout` seconds (`nil`: without limit).
    /// Returns whether the permits were taken.
    public func acquire(n: Int = 1, timeout: TimeInterval? = nil) async throws -> Bool {
        let permits = try await acquirePermits(n: n, timeout: timeout)
        return !permits.isEmpty
    }

    /// As `acquire`, returning the permits taken (empty when not acquired). Cancelling the task
    /// ends the wait: the waiter leaves the queue, permits granted meanwhile are given back, and
    /// `CancellationError` is thrown. The permits are granted spared (see below) until they are
    /// the caller's: a `release` beside a grant that a cancellation is giving back takes other
    /// permits, not that one, which would leave the give-back nothing and the permit it meant held.
    public func acquirePermits(n: Int = 1, timeout: TimeInterval? = nil) async throws -> [Permit] {
        let permits = try await acquirePermits(n: n, timeout: timeout, spared: true)
        if !permits.isEmpty { raw.unspare(tokens: permits.map { $0.token }) }
        return permits
    }

    /// `spared`: for `withPermit`, whose permits the host takes last in a `release` beside it
    /// from the moment it grants them, before the body has them.
    private func acquirePermits(n: Int, timeout: TimeInterval?, spared: Bool) async throws -> [Permit] {
        // A task cancelled before it asks sends nothing.
        try Task.checkCancellation()
        // UniFFI's Swift driver does not drop a cancelled task's future: the cancellation goes
        // to Rust through this object instead.
        let cancellation = PotterySemaphoreFFI.Cancellation()
        let permits: [Permit]
        do {
            permits = try await translatingErrors {
                try await withTaskCancellationHandler {
                    try await raw.acquireCancellableAsync(n: Int64(n), blocking: true, timeoutS: timeout, spared: spared, cancellation: cancellation)
                } onCancel: {
                    cancellation.cancel()
                }
            }
        } catch SemaphoreError.cancelled where Task.isCancelled {
            throw CancellationError()
        }
        if Task.isCancelled {
            if !permits.isEmpty { _ = try? await releasePermits(permits) }
            throw CancellationError()
        }
        return permits
    }

    /// Gives back exactly these permits (never another holder's); returns the tokens of those
    /// this handle still held.
    @discardableResult
    public func releasePermits(_ permits: [Permit]) async throws -> [UInt64] {
        try await translatingErrors {
            try await raw.releasePermitsAsync(tokens: permits.map { $0.token })
        }
    }

    /// Gives back `n` permits: this handle's own first (those of running `withPermit` bodies
    /// last), then (permits are fungible) other holders'. After any error but `.invalidArgument`
    /// and `.bounded` the release may or may not have happened (`.notReplicated`: it did, on the
    /// primary): the handle finishes it in the background, so do not call `release` again for
    /// it, or it would give back another holder's permit.
    public func release(n: Int = 1) async throws {
        try await translatingErrors {
            try await raw.releaseAsync(n: Int64(n))
        }
    }

    /// Runs `body` holding one permit, which is released when `body` returns or throws: that
    /// very permit, never another (a plain `release` gives back any, others' included).
    public func withPermit<T>(_ body: () async throws -> T) async throws -> T {
        let permits = try await acquirePermits(n: 1, timeout: nil, spared: true)
        guard !permits.isEmpty else {
            throw SemaphoreError.runtime("acquire without a timeout returned no permit")
        }
        // `defer` cannot `await` in Swift 5.9, so this is the `finally` written out.
        let result: T
        do {
            result = try await body()
        } catch {
            _ = try? await releasePermits(permits)
            throw error
        }
        try await releasePermits(permits)
        return result
    }
}
