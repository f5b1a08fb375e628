"""Generate imgen's man pages from its click command tree, so options never drift from the code.

    python scripts/make_man.py            # write man/imgen.1 and man/imgen-COMMAND.1
    python scripts/make_man.py --check    # exit 1 and name the pages that are stale or missing

Pages are made for the host's own commands and those of built-in plugins; third-party plugins
installed here are left out. The output depends only on the code, not on the terminal, the
date or the machine, so a page that differs from a fresh rendering is stale.
"""

from __future__ import annotations

import argparse
import inspect
import os
import re
import sys
import textwrap
from datetime import datetime, timezone
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parent.parent
MAN_DIR = ROOT / "man"
MANUAL = "imgen manual"
# click 8.3 marks "no default" with a sentinel; older versions use None.
UNSET = getattr(click.core, "UNSET", None)

ENVIRONMENT = [
    ("IMGEN_PLUGINS", "Comma-separated Python module names to load as extra plugins, without "
                      "installing them (for plugin development and tests)."),
    ("IMGEN_LOAD_PLUGINS", "When set, only the listed installed third-party plugins are loaded "
                           "(comma-separated entry-point or distribution names) besides the built-in "
                           "ones; empty loads the built-in plugins only."),
    ("IMGEN_MODELS", "The user model folder searched by --model NAME; default "
                     "$XDG_DATA_HOME/imgen/models, that is ~/.local/share/imgen/models."),
    ("XDG_DATA_HOME", "Base of the default user model folder."),
    ("IMGEN_MEMORY", "Memory the whole process may take on the CPU, which sizes --tile auto: tiles get "
                     "what the image and its output leave of it (and at most a quarter of the free "
                     "memory). Bytes with an optional K, M, G or T (1.5G), at least 64M; default 1.75G (1.88 GB)."),
    ("IMGEN_SERVER", "The URL of a running imgen serve to send images to, as --server URL does."),
    ("NO_COLOR", "When set, listings (imgen plugins, imgen models) are printed without colour."),
    ("TERM", "dumb: progress is printed as plain lines, without escape sequences or carriage returns."),
    ("CUDA_VISIBLE_DEVICES", "Which GPUs --device auto and --device cuda:N may use."),
]

INPUT_RULES = [
    "Inputs are image files (PNG, JPEG, WebP, TIFF, BMP; GIF is read only), folders (their images, "
    "sorted by name, hidden files skipped), or - for standard input. With no input, standard input "
    "is read when it is not a terminal. A folder's subfolders are left out, and said so once, "
    "unless -r (--recursive) is given. A folder never supplies files named like the outputs this "
    "command writes beside its inputs (photo-sr.jpg, photo-sr-x2.jpg, photo-sr-x4.jpg for imgen sr, "
    "at any factor or size; with --suffix or --name, what they make), so running the same command "
    "on a folder twice never processes the first run's results; -v names the files left out.",
    "By default each output is written beside its input, named after it, the command and, when the "
    "size changes, the factor: photo.jpg becomes photo-sr-x4.jpg with imgen sr (photo-sr-x2.jpg "
    "with --scale 2), photo-denoise.jpg with imgen denoise, and a chain names every step "
    "(photo-denoise-sr-x2.jpg). --suffix TEXT names it STEM+TEXT instead (--suffix _big: "
    "photo_big.jpg); --name TEMPLATE builds the whole name from the fields {stem} (the input's "
    "name without extension), {ext} (its extension, changed to match --format), {command} (the "
    "commands, joined by -), {scale} (the size factor, 1 when unchanged) and {model} (the models "
    "run), e.g. --name '{stem}-{command}{scale}x.{ext}' gives photo-sr4x.jpg.",
    "-o FILE names the output of a single input; with several inputs or a folder input it is a "
    "usage error. -o FOLDER (an existing folder or a name ending in /, and the only choice for "
    "several inputs) writes each output into that folder under its input's name (or the --suffix "
    "or --name one); with -r it mirrors the input folders' subfolders. -o - writes to standard "
    "output. Two inputs that would be written to one name are found before anything runs.",
    "Standard input goes to standard output unless -o says otherwise. Only image bytes are written "
    "to standard output, and never to a terminal; messages and progress go to standard error.",
    "The output format follows --format, else the output name's extension, else the input's format "
    "(PNG on standard output and for formats imgen does not write). Bit depth (8 or 16 bits), "
    "grey, alpha, the ICC profile and EXIF data are kept where the format allows (--strip drops "
    "the metadata); EXIF orientation is applied on reading.",
    "An input is never overwritten. An existing output is replaced only with --overwrite, or "
    "skipped with --skip-existing. Outputs are written atomically, so an interrupted run leaves "
    "no partial file. A batch goes on past a bad input and ends with a summary.",
]

SCRIPTING_RULES = [
    "--dry-run prints the plan, one line per input (input -> output, the models, and whether the "
    "output exists), and stops: no model is loaded, nothing is read beyond the first bytes of each "
    "input, nothing is written.",
    "--json prints one JSON object per line on standard output: per input its input, output, "
    "status (written, skipped or failed; planned with --dry-run), error, size_in and size_out "
    "([width, height]), model, device, precision and seconds, then a summary (summary: true, "
    "written, skipped, failed, seconds). When standard output carries the image, --json is a "
    "usage error; --report FILE writes the same lines to a file.",
    "--jobs N converts N files at once in threads, each with its share of the CPU threads "
    "(--threads, default the cores divided by N); outputs are written and reported in the inputs' "
    "order, with the same bytes as --jobs 1. It helps on the CPU when single images leave cores "
    "idle (small images, decoding and encoding); the default, auto, runs 2 at once on the CPU for "
    "several images of at most 4 megapixels, else 1. On a GPU files run one at a time.",
    "On a terminal, progress bars show images and tiles, then a status line while a large output is "
    "encoded; with TERM=dumb progress is printed as plain lines. -v adds the model, device and "
    "precision of each step, the tiles of each image and the time of each file.",
]

CHAIN_RULES = [
    "Several commands separated by a lone + run in one process, one after the other on each "
    "image, the image staying in memory (and on the GPU) between steps:",
    ".EX imgen denoise + sr --scale 2 photo.jpg -o photo-big.png",
    "Each step takes its own options. The shared options (inputs, -o, --device, --precision, "
    "--tile, ...) may be given in any step; a value given in two steps must agree, and inputs "
    "may be given in one step only. --blend is each step's own: it mixes that step's result with "
    "its input. The output size (--width, --height, --fit) is the chain's, wherever it is written. "
    "imgen plugins and imgen models cannot be chained. The same "
    "work can be done with a shell pipe, one process per step:",
    ".EX imgen denoise - < photo.jpg | imgen sr --scale 2 - > photo-big.png",
]

ARGUMENT_HELP = ("Image files, folders of images, or - for standard input (the default when it is "
                 "not a terminal). See INPUT AND OUTPUT in imgen(1).")


# -- roff ------------------------------------------------------------------------------------------


def escape(text: str) -> str:
    """Text safe in a roff text line or macro argument.

    Backslashes print as \\e, every hyphen is \\- (the form man(7) expects for options and names
    people type, which Debian's man also maps to ASCII '-' so copy and paste works), and
    characters beyond ASCII become \\[uXXXX], since groff reads input as Latin-1.
    """
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "".join(c if ord(c) < 128 else f"\\[u{ord(c):04X}]" for c in text)


def text_line(text: str) -> str:
    """Escaped running text on one line; `assemble` wraps it.

    Words people type (options, names, paths) get \\% so that groff never hyphenates them."""
    return " ".join(("\\%" if re.search(r"[-/_|=~$]|\.\w", word) else "") + escape(word) for word in text.split())


def wrap(roff: str) -> str:
    """Break roff text at spaces into lines of at most 80 bytes (pages are read as source too);
    a line starting with a dot or apostrophe would be a request."""
    lines = textwrap.wrap(roff, width=78, break_long_words=False, break_on_hyphens=False) or [""]
    return "\n".join("\\&" + line if line.startswith((".", "'")) else line for line in lines)


def assemble(lines: list[str]) -> str:
    """The page source: text lines wrapped, except in examples and the tag line after .TP (the
    tag is exactly one line); no paragraph break right after a heading (mandoc warns about it)."""
    out: list[str] = []
    verbatim = False
    for line in lines:
        if line == ".PP" and out and out[-1].startswith(".SH"):
            continue
        verbatim = (verbatim or line == ".EX") and line != ".EE"
        keep = verbatim or line.startswith(".") or (out and out[-1] == ".TP")
        out.append(line if keep else wrap(line))
    return "\n".join(out) + "\n"


def literal(text: str) -> str:
    """One escaped line of a no-fill block (an example), kept as it is."""
    line = escape(text.rstrip())
    return "\\&" + line if line.startswith((".", "'")) else line


def quoted(text: str) -> str:
    """A macro argument; roff has no escape for '"' inside quotes, so use the \\(dq glyph."""
    return '"' + escape(text).replace('"', "\\(dq") + '"'


def example(command: str) -> list[str]:
    return [".PP", ".RS 4", ".EX", literal(command), ".EE", ".RE"]


def paragraphs(rules: list[str]) -> list[str]:
    lines: list[str] = []
    for rule in rules:
        if rule.startswith(".EX "):
            lines += example(rule[4:])
        else:
            lines += [".PP", text_line(rule)]
    return lines


def help_paragraphs(help_text: str) -> list[str]:
    """A click help text as roff: its paragraphs, with click's \\b blocks and indented blocks
    (examples) kept verbatim."""
    lines: list[str] = []
    for block in re.split(r"\n\s*\n", inspect.cleandoc(help_text or "")):
        if not block.strip():
            continue
        raw = block.splitlines()
        if raw[0].strip() == "\b" or all(line.startswith((" ", "\t")) for line in raw):
            body = textwrap.dedent("\n".join(line for line in raw if line.strip() != "\b")).splitlines()
            lines += [".PP", ".RS 4", ".EX", *(literal(line) for line in body), ".EE", ".RE"]
        else:
            lines += [".PP", text_line(block)]
    return lines


def bold(text: str) -> str:
    return f"\\fB{escape(text)}\\fR"


def italic(text: str) -> str:
    return f"\\fI{escape(text)}\\fR"


def placeholders(text: str) -> str:
    """A usage string with its upper-case placeholders in italics: [\\fIINPUT\\fR]..."""
    return re.sub(r"[A-Z][A-Z_]*", lambda m: f"\\fI{m.group()}\\fR", escape(text))


# -- the command tree ------------------------------------------------------------------------------


def metavar(param: click.Parameter, ctx: click.Context) -> str | None:
    if isinstance(param, click.Option) and param.is_flag:
        return None
    if param.metavar:
        return param.metavar
    if isinstance(param.type, click.IntRange):
        return "INTEGER"
    if isinstance(param.type, click.FloatRange):
        return "FLOAT"
    try:
        return param.make_metavar(ctx)
    except TypeError:  # click < 8.2 takes no context
        return param.make_metavar()


def describe_range(kind: click.types._NumberRangeBase) -> str | None:
    low = None if kind.min is None else f"{'above' if kind.min_open else 'at least'} {kind.min}"
    high = None if kind.max is None else f"{'below' if kind.max_open else 'at most'} {kind.max}"
    if low and high:
        return f"{low} and {high}"
    return low or high


def option_entry(param: click.Option, ctx: click.Context) -> list[str]:
    names = [*param.opts, *param.secondary_opts]
    tag = ", ".join(bold(name) for name in names)
    meta = metavar(param, ctx)
    if meta:
        tag += " " + italic(meta)
    help_text = " ".join((param.help or "").split())
    notes = []
    if isinstance(param.type, click.types._NumberRangeBase):
        span = describe_range(param.type)
        if span:
            notes.append(f"Range: {span}.")
    default = param.get_default(ctx, call=False)
    if default is not UNSET and not callable(default) and default not in (None, (), "") and not (param.is_flag and default is False):
        notes.append(f"Default: {default}.")
    body = " ".join(filter(None, [help_text, *notes]))
    return [".TP", tag, text_line(body or "(no help text)")]


def command_params(command: click.Command, ctx: click.Context):
    options = [p for p in command.get_params(ctx) if isinstance(p, click.Option)]
    arguments = [p for p in command.get_params(ctx) if isinstance(p, click.Argument)]
    return options, arguments


def header(title: str, summary: str, version: str, date: str) -> list[str]:
    return [
        '.\\" Generated by scripts/make_man.py from the click command tree; do not edit.',
        f'.TH {escape(title.upper())} 1 "{date}" {quoted("imgen " + version)} {quoted(MANUAL)}',
        # Ragged right: justified lines stretch the spaces around long option names.
        ".ad l",
        ".SH NAME",
        f"{escape(title)} \\- {escape(summary)}",
    ]


def command_page(name: str, command: click.Command, root_ctx: click.Context, version: str, date: str,
                 others: list[str]) -> str:
    ctx = click.Context(command, info_name=name, parent=root_ctx, **command.context_settings)
    summary = command.get_short_help_str(limit=200).rstrip(".")
    lines = header(f"imgen-{name}", summary[:1].lower() + summary[1:], version, date)
    lines += [".SH SYNOPSIS", ".SY imgen", f"{bold(name)} [\\fIOPTIONS\\fR]" + "".join(
        f" {placeholders(metavar(a, ctx) or a.name.upper())}" for a in command_params(command, ctx)[1]), ".YS"]
    lines += [".SH DESCRIPTION", *help_paragraphs(command.help or "")]
    options, arguments = command_params(command, ctx)
    if arguments:
        lines += [".SH ARGUMENTS"]
        for argument in arguments:
            # Commands with arguments of their own (imgen metrics) describe them in DESCRIPTION.
            text = ARGUMENT_HELP if argument.name == "inputs" else "See DESCRIPTION."
            lines += [".TP", placeholders(metavar(argument, ctx) or argument.name.upper()), text_line(text)]
    lines += [".SH OPTIONS"]
    for option in options:
        lines += option_entry(option, ctx)
    lines += examples_section(getattr(command, "examples", []))
    lines += [".SH SEE ALSO", see_also(["imgen", *(f"imgen-{other}" for other in others if other != name)])]
    return assemble(lines)


def examples_section(examples) -> list[str]:
    """EXAMPLES: each caption, then its command line verbatim (the same pairs as in --help)."""
    lines = [".SH EXAMPLES"] if examples else []
    for command, caption in examples:
        lines += [".PP", text_line(caption.rstrip(".:") + ":"), *example(command)[1:]]
    return lines


def see_also(pages: list[str]) -> str:
    refs = [f".BR \\%{escape(page)} (1)" + ("," if i < len(pages) - 1 else "") for i, page in enumerate(pages)]
    return "\n".join(refs)


def root_page(cli: click.Group, ctx: click.Context, names: list[str], version: str, date: str) -> str:
    from imgen_cli import errors

    lines = header("imgen", "enhance images with generative models", version, date)
    lines += [
        ".SH SYNOPSIS",
        ".SY imgen", "[\\fB\\-q\\fR] [\\fB\\-v\\fR] [\\fB\\-\\-debug\\fR] \\fICOMMAND\\fR [\\fIOPTIONS\\fR] "
        "[\\fIINPUT\\fR]...", ".YS",
        ".SY imgen", "\\fICOMMAND\\fR [\\fIOPTIONS\\fR] \\fB+\\fR \\fICOMMAND\\fR [\\fIOPTIONS\\fR] ... "
        "[\\fIINPUT\\fR]...", ".YS",
        ".SY imgen", "\\fBplugins\\fR | \\fBmodels\\fR [\\fB\\-\\-json\\fR]", ".YS",
        ".SY imgen", "\\fBinstall\\fR | \\fBuninstall\\fR \\fIPACKAGE\\fR...", ".YS",
        ".SY imgen", "\\fB\\-\\-help\\fR | \\fB\\-\\-version\\fR", ".YS",
        ".SH DESCRIPTION",
        *help_paragraphs(cli.help or ""),
        ".PP",
        text_line("Every command is a plugin, built-in or installed separately (see imgen plugins); "
                  "each has its own page, imgen-COMMAND(1), and its own --help."),
        ".SH COMMANDS",
    ]
    for name in names:
        command = cli.get_command(ctx, name)
        lines += [".TP", bold(name), text_line(command.get_short_help_str(limit=200))]
    lines += [".SH OPTIONS"]
    for option in command_params(cli, ctx)[0]:
        lines += option_entry(option, ctx)
    lines += [".SH CHAINS", *paragraphs(CHAIN_RULES)]
    lines += [".SH INPUT AND OUTPUT", *paragraphs(INPUT_RULES)]
    lines += [".SH SCRIPTING AND PROGRESS", *paragraphs(SCRIPTING_RULES)]
    lines += [".SH EXIT STATUS"]
    for code, meaning in exit_statuses(errors):
        lines += [".TP", bold(str(code)), text_line(meaning)]
    lines += [".SH ENVIRONMENT"]
    for variable, meaning in ENVIRONMENT:
        lines += [".TP", bold(variable), text_line(meaning)]
    lines += examples_section(cli.examples)
    lines += [".SH SEE ALSO", see_also([f"imgen-{name}" for name in names])]
    return assemble(lines)


def exit_statuses(errors) -> list[tuple[int, str]]:
    """The table in imgen_cli.errors' docstring, checked against its constants."""
    table = [(int(code), meaning) for code, meaning in re.findall(r"^(\d+)\s+(\S.*)$", errors.__doc__, re.M)]
    constants = {value for name, value in vars(errors).items() if name.isupper() and isinstance(value, int)}
    missing = constants - {code for code, _ in table}
    if missing:
        raise SystemExit(f"exit statuses {sorted(missing)} are not described in imgen_cli/errors.py")
    return table


def builtin_registry():
    """The installed plugins of the imgen distribution only ($IMGEN_PLUGINS is ignored)."""
    from imgen_cli.plugins import Registry, get_plugin_manager

    registry = Registry(get_plugin_manager())
    registry.load_entry_points()
    return registry


def build_date() -> str:
    """$SOURCE_DATE_EPOCH (reproducible builds), else today, in UTC."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    moment = datetime.fromtimestamp(int(epoch), timezone.utc) if epoch else datetime.now(timezone.utc)
    return moment.strftime("%Y-%m-%d")


def undated(page: str) -> str:
    return re.sub(r'^(\.TH \S+ 1 )"[^"]*"', r'\1""', page, count=1, flags=re.M)


def root_context(cli: click.Group) -> click.Context:
    # With the group's own settings (-h beside --help), as when imgen runs: click builds and
    # caches the help option from the first context it sees.
    return click.Context(cli, info_name="imgen", **cli.context_settings)


def render_pages(registry=None, date: str | None = None) -> dict[str, str]:
    """{file name: roff text} for imgen.1 and one imgen-COMMAND.1 per host or built-in command."""
    from imgen_cli import __version__
    from imgen_cli.cli import HOST_COMMANDS, cli
    from imgen_cli.plugins import set_registry

    registry = registry or builtin_registry()
    date = date or build_date()
    broken = [f"{info.name}: {info.error}" for info in registry.plugins.values() if info.builtin and info.error]
    if broken:
        raise SystemExit("built-in plugins failed to load: " + "; ".join(broken))
    set_registry(registry)
    try:
        ctx = root_context(cli)
        names = [name for name in cli.list_commands(ctx)
                 if name in HOST_COMMANDS
                 or (name in registry.command_owner and registry.plugins[registry.command_owner[name]].builtin)]
        pages = {"imgen.1": root_page(cli, ctx, names, __version__, date)}
        for name in names:
            pages[f"imgen-{name}.1"] = command_page(name, cli.get_command(ctx, name), ctx, __version__, date, names)
    finally:
        set_registry(None)
    return pages


def stale_pages(pages: dict[str, str], folder: Path) -> list[str]:
    """Pages in `folder` that differ from `pages` (dates aside), are missing, or should not be there.

    A page's date is when its content last changed, so an unchanged page keeps its date."""
    stale = [name for name, text in pages.items()
             if not (folder / name).is_file() or undated((folder / name).read_text()) != undated(text)]
    extra = [p.name for p in folder.glob("imgen*.1") if p.name not in pages] if folder.is_dir() else []
    return sorted(stale + extra)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=MAN_DIR, help="folder for the pages (default: man/)")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 naming the pages that are stale, missing or left over")
    args = parser.parse_args(argv)
    pages = render_pages()
    stale = stale_pages(pages, args.out)
    if args.check:
        if stale:
            print(f"stale man pages in {args.out}: {', '.join(stale)} "
                  "(run python scripts/make_man.py)", file=sys.stderr)
            return 1
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name in stale:
        if name in pages:
            (args.out / name).write_text(pages[name])
        else:
            (args.out / name).unlink()
        print(f"wrote {args.out / name}" if name in pages else f"removed {args.out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
