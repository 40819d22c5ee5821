"""Parse-checks Swift sources with tree-sitter's Swift grammar (no Swift toolchain needed).

    python check_parse.py PATH...     (files, or directories searched for *.swift)

Prints one line per file and exits 1 if any file has an ERROR or MISSING node, each reported as
file:line:column. This is a syntax check only: names, types and availability are not checked.

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


def main(argv):
    if not argv:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    parser = tree_sitter.Parser(tree_sitter.Language(tree_sitter_swift.language()))
    files = list(swift_files(argv))
    if not files:
        print("no .swift files found", file=sys.stderr)
        return 1
    failed = 0
    for file in files:
        try:
            source = file.read_bytes()
        except OSError as e:
            print(f"{file}: cannot read: {e}")
            failed += 1
            continue
        blanked, problems = blank_directives(source, file)
        problems += syntax_errors(parser.parse(blanked), file)
        if problems:
            failed += 1
            print(f"FAIL {file}")
            for problem in problems:
                print(f"  {problem}")
        else:
            lines = len(source.splitlines())
            print(f"ok   {file} ({lines} lines)")
    print(f"{len(files) - failed} parsed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
