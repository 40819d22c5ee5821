"""Parse-checks Swift sources with tree-sitter's Swift grammar (no Swift toolchain needed).

    python check_parse.py PATH...     (files, or directories searched for *.swift)

Prints one line per file and exits 1 if any file has an ERROR or MISSING node, each reported as
file:line:column. Beyond syntax, one check of names: every call the hand-written layer makes on
the generated Semaphore (`raw.name(label: ...)`, `PotterySemaphoreFFI.Semaphore.name(...)`) must
name a function the generated module declares, with its argument labels. Types and availability
are not checked: that needs a Swift compiler.

Conditional-compilation lines (#if, #elseif, #else, #endif) are checked here for balance and then
blanked before parsing, keeping every line and column in place. The grammar reads them as loose
"extras" and so rejects valid Swift such as an attribute alone in an #if block (SE-0367), which
UniFFI's generated code uses throughout; with the lines blanked, each branch is parsed in sequence,
which is valid exactly when each branch holds whole declarations, statements or attributes, as
Swift requires of active branches.
"""

import re
import sys
from pathlib import Path

import tree_sitter
import tree_sitter_swift

SKIP_DIRS = {".build", ".swiftpm"}
DIRECTIVE = re.compile(rb"^[ \t]*#(if|elseif|else|endif)\b(.*)$")


def swift_files(paths):
    for path in map(Path, paths):
        if path.is_dir():
            for file in sorted(path.rglob("*.swift")):
                if not SKIP_DIRS.intersection(file.relative_to(path).parts):
                    yield file
        else:
            yield path


def blank_directives(source, name):
    """Returns the source with directive lines blanked, and problems with the directives."""
    problems, depth, lines = [], [], source.split(b"\n")
    for number, line in enumerate(lines, 1):
        match = DIRECTIVE.match(line)
        if not match:
            continue
        keyword, rest = match.group(1), match.group(2).split(b"//")[0].strip()
        if keyword in (b"if", b"elseif") and not rest:
            problems.append(f"{name}:{number}:1: #{keyword.decode()} without a condition")
        if keyword == b"if":
            depth.append(number)
        elif not depth:
            problems.append(f"{name}:{number}:1: #{keyword.decode()} without #if")
        elif keyword == b"endif":
            depth.pop()
        lines[number - 1] = b" " * len(line)
    problems += [f"{name}:{number}:1: #if without #endif" for number in depth]
    return b"\n".join(lines), problems


def first_culprit(node):
    """The first innermost ERROR or MISSING node under an error node: where parsing first broke."""
    while True:
        inner = next((c for c in node.children if c.is_error or c.is_missing or c.has_error), None)
        if inner is None:
            return node
        node = inner


def syntax_errors(tree, name):
    """One message per outermost ERROR or MISSING node, placed where it first went wrong."""
    stack, found = [tree.root_node], []
    while stack:
        node = stack.pop()
        if node.is_error or node.is_missing:
            culprit = first_culprit(node)
            line, column = culprit.start_point
            what = f"missing {culprit.type!r}" if culprit.is_missing else "syntax error"
            text = (culprit.text or b"").decode("utf-8", "replace").strip().split("\n")[0][:40]
            if text and not culprit.is_missing:
                what += f" at {text!r}"
            first, last = node.start_point[0] + 1, node.end_point[0] + 1
            if last > first:
                what += f" (unparsed region: lines {first}-{last})"
            found.append((line, column, f"{name}:{line + 1}:{column + 1}: {what}"))
        elif node.has_error:
            stack.extend(node.children)
    return [message for *_, message in sorted(found)]


GENERATED_DIR = "PotterySemaphoreFFI"
GENERATED_MODULE = b"PotterySemaphoreFFI"
GENERATED_TYPE = GENERATED_MODULE + b".Semaphore"


def name_of(node):
    return node.text.decode().strip("`")


def declared_functions(tree):
    """Every function the generated module declares: name -> list of (labels, how many have
    defaults), a label being None for `_`."""
    found, stack = {}, [tree.root_node]
    while stack:
        node = stack.pop()
        stack.extend(node.children)
        if node.type == "class_declaration":
            name = node.child_by_field_name("name")
            if name is not None:
                found.setdefault("init " + name_of(name), [])
        if node.type not in ("function_declaration", "protocol_function_declaration"):
            continue
        name = node.child_by_field_name("name")
        if name is None:
            continue
        labels, defaults = [], 0
        for param in (c for c in node.children if c.type == "parameter"):
            external = param.child_by_field_name("external_name") or param.child_by_field_name("name")
            label = name_of(external) if external is not None else None
            labels.append(None if label == "_" else label)
        # A parameter's default value follows it as `= value` among the declaration's children.
        defaults = sum(1 for c in node.children if c.type == "=")
        found.setdefault(name_of(name), []).append((labels, defaults))
    return found


def layer_calls(tree):
    """(line, callee, method, labels) of every call on `raw.` or on the generated type, and of
    every constructor of a generated type (labels None, method "init Type")."""
    calls, stack = [], [tree.root_node]
    while stack:
        node = stack.pop()
        stack.extend(node.children)
        if node.type != "call_expression" or not node.children or node.children[0].type != "navigation_expression":
            continue
        callee = node.children[0]
        base, suffix = callee.children[0], callee.children[-1]
        if base.text == GENERATED_MODULE:  # a constructor: PotterySemaphoreFFI.Type(...)
            calls.append((node.start_point[0] + 1, callee.text.decode(), "init " + suffix.text.decode().lstrip("."), None))
            continue
        if base.text != b"raw" and base.text != GENERATED_TYPE:
            continue
        method = suffix.text.decode().lstrip(".").strip("`")
        arguments = next((c for c in node.children[1].children if c.type == "value_arguments"), None) if len(node.children) > 1 else None
        labels = []
        for argument in (c for c in (arguments.children if arguments else []) if c.type == "value_argument"):
            label = next((c for c in argument.children if c.type == "value_argument_label"), None)
            labels.append(name_of(label) if label is not None else None)
        calls.append((node.start_point[0] + 1, callee.text.decode(), method, labels))
    return calls


# The layer calls at least this many functions of the generated module (openAsync,
# acquireCancellableAsync, unspare, releasePermitsAsync, releaseAsync, Cancellation()): fewer
# found means the check no longer sees them (a grammar whose node shapes changed), not that all
# is well.
MIN_LAYER_CALLS = 6


def call_problems(parsed):
    """Calls of the layer that name no generated function with their labels."""
    declared = {}
    for file, tree in parsed:
        if GENERATED_DIR in file.parts:
            for name, signatures in declared_functions(tree).items():
                declared.setdefault(name, []).extend(signatures)
    if not declared:
        return [f"no function declared under {GENERATED_DIR}: the generated module is missing or empty"]
    problems, checked = [], 0
    for file, tree in parsed:
        if GENERATED_DIR in file.parts:
            continue
        for line, callee, method, labels in layer_calls(tree):
            checked += 1
            signatures = declared.get(method)
            if labels is None:  # a constructor: the type must exist (its initialisers are not matched)
                fits = signatures is not None
            else:
                fits = any(labels == wanted[: len(labels)] and len(wanted) - len(labels) <= defaults for wanted, defaults in signatures or [])
            if not fits:
                shown = ", ".join(f"{label or '_'}:" for label in labels or [])
                problems.append(f"{file}:{line}:1: {callee}({shown}) matches no function of the generated module")
    if checked < MIN_LAYER_CALLS:
        problems.append(f"only {checked} call(s) of the generated module found in the layer, at least {MIN_LAYER_CALLS} expected")
    return problems


def main(argv):
    if not argv:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    parser = tree_sitter.Parser(tree_sitter.Language(tree_sitter_swift.language()))
    files = list(swift_files(argv))
    if not files:
        print("no .swift files found", file=sys.stderr)
        return 1
    failed, parsed = 0, []
    for file in files:
        try:
            source = file.read_bytes()
        except OSError as e:
            print(f"{file}: cannot read: {e}")
            failed += 1
            continue
        blanked, problems = blank_directives(source, file)
        tree = parser.parse(blanked)
        parsed.append((file, tree))
        problems += syntax_errors(tree, file)
        if problems:
            failed += 1
            print(f"FAIL {file}")
            for problem in problems:
                print(f"  {problem}")
        else:
            lines = len(source.splitlines())
            print(f"ok   {file} ({lines} lines)")
    print(f"{len(files) - failed} parsed, {failed} failed")
    calls = call_problems(parsed)
    for problem in calls:
        print(f"  {problem}")
    if calls:
        print(f"{len(calls)} problem(s) with the layer's calls of the generated module")
    return 1 if failed or calls else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
