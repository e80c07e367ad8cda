"""The documentation names only commands, flags, targets and files that exist.

Every command line in the READMEs (fenced and indented code, inline `code` spans) and in the usage comments of the
Snakefile, profiles and configs is checked against the real thing:

- `twodmse CMD --flag` (also `.venv/bin/twodmse`, `python -m twodmse.cli`, `torchrun ... -m twodmse.cli`):
  CMD is a command and every flag appears in `twodmse CMD --help`;
- `python SCRIPT --flag` (benchmarks/*.py, twodmse/published/build.py): the script exists and the flag
  appears in its --help;
- `snakemake ...`: Snakemake's own parser accepts every flag, each target is a rule of the workflow (or a
  file path), and --configfile / --workflow-profile / --snakefile name files that exist;
- `make TARGET`: the Makefile has the target (and `ARGS=...` passes the Snakemake check);
- a code span or argument that is a repository path (configs/..., workflow/..., twodmse/..., ...) exists.

Offline, about 10 s.
"""
import argparse
import contextlib
import functools
import io
import os
import re
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
DOCS = ["README.md", "workflow/README.md", "twodmse/published/README.md"]
# Files whose `#   command` comments show how to run something.
COMMENTED = ["Snakefile", "profiles/default/config.yaml", "profiles/slurm/config.yaml", "configs/default.yaml",
             "configs/paper.yaml", "configs/ci.yaml", "configs/study.yaml", "configs/study-mpnet.yaml",
             "configs/study-mpnet-gpu.yaml"]
PATH_PREFIXES = ("configs/", "workflow/", "profiles/", "benchmarks/", "twodmse/", "tests/", ".ci/")
TOP_FILES = {"Snakefile", "Makefile", "pyproject.toml", "environment.yml", "constraints-cpu.txt",
             "requirements-offline.txt", "README.md"}
PLACEHOLDER = re.compile(r"[<>*{}]|\.\.\.|^[A-Z][A-Z_]*$")  # <pid>, runs/.../x, {a,b}, COMMAND, FILE


# ---------------------------------------------------------------- finding the code in a document

def code_snippets(text, markdown=True):
    """(line number, code) of every fenced or indented code line and inline code span; comments in code lines are
    dropped. With markdown=False, the `#   command` lines of a commented file."""
    if not markdown:
        return [(n, m.group(1)) for n, line in enumerate(text.splitlines(), 1)
                if (m := re.match(r"\s*#\s{2,}(\S.*)$", line))]
    snippets, prose, fenced = [], [], False
    for n, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            prose.append((n, ""))
        elif fenced or re.match(r" {4,}\S", line):
            snippets.append((n, line))
            prose.append((n, ""))
        else:
            prose.append((n, line))
    # inline spans may wrap onto the next line
    joined = "\n".join(line for _, line in prose)
    for m in re.finditer(r"`([^`]+)`", joined):
        snippets.append((joined.count("\n", 0, m.start()) + 1, m.group(1).replace("\n", " ")))
    return sorted(snippets)


def commands(code):
    """The commands of one code line, as token lists: split at ; && || | and cut at a comment."""
    code = re.sub(r"(^|\s)#.*$", "", code)
    out = []
    for part in re.split(r"&&|\|\||[;|]", code):
        try:
            tokens = shlex.split(part)
        except ValueError:
            tokens = part.split()
        while tokens and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", tokens[0]):  # VAR=value prefixes
            tokens = tokens[1:]
        if tokens:
            out.append(tokens)
    return out


def classify(tokens):
    """('twodmse'|'snakemake'|'make'|'script', args) for a command this test knows, else None."""
    program = re.fullmatch(r"(?:\S*/bin/)?(twodmse|snakemake|make|torchrun|python[0-9.]*)", tokens[0])
    if not program:  # grep, pip, conda, a path such as ~/.cache/twodmse ...
        return None
    head, rest = program.group(1), tokens[1:]
    if head in ("twodmse", "snakemake", "make"):
        return head, rest
    if head == "torchrun" and "-m" in rest:
        head, rest = "python", rest[rest.index("-m"):]
    if re.fullmatch(r"python[0-9.]*", head) and rest:
        if rest[0] == "-m" and len(rest) > 1:
            module = {"twodmse.cli": "twodmse", "twodmse": "twodmse", "snakemake": "snakemake"}.get(rest[1])
            return (module, rest[2:]) if module else None
        if rest[0].endswith(".py"):
            return "script", rest
    return None


# ---------------------------------------------------------------- what exists

@functools.lru_cache(maxsize=None)
def twodmse_help(command):
    """`twodmse COMMAND --help` (None: not a command); built in-process, the same text the CLI prints."""
    from twodmse import cli
    argv = [command, "--help"] if command else ["--help"]
    if command and command not in cli.COMMANDS:
        return None
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer), pytest.raises(SystemExit):
        cli.build_parser(command).parse_args(argv)
    return buffer.getvalue()


@functools.lru_cache(maxsize=None)
def script_help(script):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    result = subprocess.run([sys.executable, str(REPO / script), "--help"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{script} --help failed:\n{result.stderr[-2000:]}"
    return result.stdout


@functools.lru_cache(maxsize=None)
def snakemake_parser():
    from snakemake.cli import get_argument_parser
    parser = get_argument_parser()
    parser.allow_abbrev = False  # `--conf` must not pass as --configfile
    return parser


@functools.lru_cache(maxsize=None)
def workflow_rules():
    files = [REPO / "Snakefile", *sorted((REPO / "workflow" / "rules").glob("*.smk"))]
    return {m.group(1) for f in files for m in re.finditer(r"^(?:rule|checkpoint)\s+(\w+)\s*:", f.read_text(), re.M)}


@functools.lru_cache(maxsize=None)
def make_targets():
    return set(re.findall(r"^([A-Za-z][\w-]*)\s*:(?!=)", (REPO / "Makefile").read_text(), re.M))


def has_flag(help_text, flag):
    return re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", help_text) is not None


def flags(args):
    return [a.split("=", 1)[0] for a in args if re.match(r"^--?[A-Za-z]", a)]


# ---------------------------------------------------------------- the checks

def repo_path_problem(token):
    token = token.rstrip(".,:;)")
    if PLACEHOLDER.search(token) or " " in token:
        return None
    if token.startswith(PATH_PREFIXES) or token in TOP_FILES:
        if not (REPO / token).exists():
            return f"{token} does not exist"
    return None


def check_twodmse(args):
    command = args[0] if args and not args[0].startswith("-") else None
    if command and PLACEHOLDER.search(command.rstrip(":")):
        command, args = None, args[1:]  # `twodmse COMMAND --help`: the generic form
    elif command:
        args = args[1:]
    help_text = twodmse_help(command)
    if help_text is None:
        return [f"`twodmse {command}`: no such command (commands: {', '.join(sorted(twodmse_help_commands()))})"]
    return [f"`twodmse {command or ''}` has no flag {f}" for f in flags(args) if not has_flag(help_text, f)]


def twodmse_help_commands():
    from twodmse import cli
    return cli.COMMANDS


def check_script(args):
    script = args[0]
    if not (REPO / script).is_file():
        return [f"{script} does not exist"]
    help_text = script_help(script)
    return [f"{script} has no flag {f}" for f in flags(args[1:]) if not has_flag(help_text, f)]


def check_snakemake(args):
    parser = snakemake_parser()
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            # argparse's own parsing: configargparse's would also read profiles and environment variables
            parsed, unknown = argparse.ArgumentParser.parse_known_args(parser, args)
    except SystemExit:
        return [f"snakemake rejects `{' '.join(args)}`: {err.getvalue().strip().splitlines()[-1]}"]
    problems = [f"snakemake has no flag {u}" for u in unknown if u.startswith("-")]
    for target in parsed.targets or []:
        if target not in workflow_rules() and not re.search(r"[/.]", target):
            problems.append(f"snakemake target {target!r} is no rule of the workflow")
    # paths under PATH_PREFIXES are checked for every command (repo_path_problem); here the rest
    for path in list(parsed.configfile or []) + ([parsed.snakefile] if parsed.snakefile else []):
        if not PLACEHOLDER.search(str(path)) and not str(path).startswith(PATH_PREFIXES) and not (REPO / path).exists():
            problems.append(f"snakemake: {path} does not exist")
    profile = parsed.workflow_profile  # a folder, or a name Snakemake looks up in profiles/
    if profile and profile != "none" and not str(profile).startswith(PATH_PREFIXES) \
            and not ((REPO / profile).is_dir() or (REPO / "profiles" / profile).is_dir()):
        problems.append(f"snakemake: workflow profile {profile} does not exist")
    return problems


def check_make(args):
    problems = []
    for arg in args:
        if arg.startswith("ARGS="):
            problems += check_snakemake(shlex.split(arg[len("ARGS="):]))
        elif not arg.startswith("-") and "=" not in arg and arg not in make_targets():
            problems.append(f"Makefile has no target {arg!r}")
    return problems


CHECKS = {"twodmse": check_twodmse, "script": check_script, "snakemake": check_snakemake, "make": check_make}


def check_code(code):
    """Problems with one code line or span: unknown commands, flags, targets and missing files."""
    problems = []
    for tokens in commands(code):
        kind = classify(tokens)
        if kind:
            problems += CHECKS[kind[0]](kind[1])
            problems += [p for t in kind[1] if (p := repo_path_problem(t))]
    if not problems and len(code.split()) == 1:  # a span that is just a path
        problems += [p for p in [repo_path_problem(code.strip())] if p]
    return problems


def check_text(text, name="text", markdown=True):
    return [f"{name}:{line}: `{code.strip()}`: {p}"
            for line, code in code_snippets(text, markdown) for p in check_code(code)]


# ---------------------------------------------------------------- tests

@pytest.fixture(scope="module", autouse=True)
def warm_script_helps():
    """Run the scripts' --help in parallel once (each imports torch)."""
    scripts = {kind[1][0] for doc in DOCS for _, code in code_snippets((REPO / doc).read_text())
               for tokens in commands(code) if (kind := classify(tokens)) and kind[0] == "script"
               and (REPO / kind[1][0]).is_file()}
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(script_help, sorted(scripts)))


@pytest.mark.parametrize("doc", DOCS)
def test_documented_commands_exist(doc):
    problems = check_text((REPO / doc).read_text(), doc)
    assert not problems, "\n".join(problems)


def test_commands_in_usage_comments_exist():
    problems = [p for f in COMMENTED for p in check_text((REPO / f).read_text(), f, markdown=False)]
    assert not problems, "\n".join(problems)


def test_the_readmes_show_every_kind_of_command():
    """The checks above saw real commands of each kind (a parser that finds nothing passes trivially)."""
    kinds = {}
    for doc in DOCS[:2]:
        for _, code in code_snippets((REPO / doc).read_text()):
            for tokens in commands(code):
                if kind := classify(tokens):
                    kinds.setdefault(kind[0], set()).add(" ".join(tokens[:3]))
    assert set(kinds) == set(CHECKS), kinds
    assert len(kinds["twodmse"]) >= 5 and len(kinds["snakemake"]) >= 5 and len(kinds["script"]) >= 4, kinds


BOGUS = """
Run

```bash
twodmse eval --model m --bogus-flag 3 --out DIR     # a comment naming --not-checked
.venv/bin/python benchmarks/eval_grid.py --threads 1 --no-such-option
snakemake --configfile configs/ci.yaml --frobnicate no_such_rule
make tset
```

then `twodmse evaluate --model m`, `snakemake --workflow-profile workflow/profiles/slurm`, `python -m twodmse.cli
train --confg x.yaml` and `configs/no_such.yaml`. Fine: `twodmse eval --mirror DIR`, `snakemake figures -n`,
`make run ARGS=--forceall`, `twodmse COMMAND --help`, `ps -ef | grep -e snakemake -e twodmse`.
"""


def test_the_checker_catches_bogus_commands():
    problems = "\n".join(check_text(BOGUS, "bogus"))
    expected = ["`twodmse eval` has no flag --bogus-flag", "benchmarks/eval_grid.py has no flag --no-such-option",
                "snakemake has no flag --frobnicate", "target 'no_such_rule' is no rule",
                "Makefile has no target 'tset'", "`twodmse evaluate`: no such command",
                "workflow/profiles/slurm does not exist", "`twodmse train` has no flag --confg",
                "configs/no_such.yaml does not exist"]
    for text in expected:
        assert text in problems, f"missing {text!r} in:\n{problems}"
    assert len(problems.splitlines()) == len(expected), problems  # nothing else: the fine lines pass
    assert "flag --not-checked" not in problems and "flag --threads" not in problems  # a comment; a real flag


def test_a_bogus_flag_added_to_the_readme_fails():
    text = (REPO / "README.md").read_text().replace("twodmse speed --model ID_OR_PATH --out DIR",
                                                    "twodmse speed --model ID_OR_PATH --out DIR --warp 9", 1)
    assert "--warp 9" in text
    assert [p for p in check_text(text, "README.md") if "has no flag --warp" in p]


def test_every_benchmark_takes_the_threads_flag_the_readme_offers():
    """README, Benchmarks: 'On a shared or busy machine, pass `--threads 1`' -- to each command listed there."""
    section = (REPO / "README.md").read_text().split("## Benchmarks", 1)[1].split("\n## ", 1)[0]
    assert "pass `--threads 1`" in section
    listed = [code for _, code in code_snippets(section) if any(classify(t) for t in commands(code))]
    assert len(listed) >= 5, listed
    problems = [p for code in listed for p in check_code(re.sub(r"\s#.*", "", code) + " --threads 1")]
    assert not problems, "\n".join(problems)


def test_threads_default_is_the_same_everywhere():
    """`threads` left out of a config means the schema's default: the one the docs and the default config give."""
    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    default = schema["properties"]["threads"]["default"]
    assert yaml.safe_load((REPO / "configs" / "default.yaml").read_text())["threads"] == default
    said = re.search(r"`threads`: .*?The default, (\d+),", (REPO / "workflow" / "README.md").read_text(), re.S)
    assert said and int(said.group(1)) == default
    profile = (REPO / "profiles" / "default" / "config.yaml").read_text()
    assert f"(config, default {default})" in profile


def claims_table(text):
    """The verdict table's lines: those starting with '|' before the first 'Tests:' (the first backbone's)."""
    return [line for line in text.split("Tests:")[0].splitlines() if line.startswith("|")]


def test_readme_verdict_table_is_the_computed_one():
    """README's Results table is figures/claims.md's (computed by twodmse report from results/), row for row."""
    readme = (REPO / "README.md").read_text()
    start, end = "<!-- claims table: from figures/claims.md -->", "<!-- end of claims table -->"
    shown = readme[readme.index(start) + len(start):readme.index(end)]
    computed = (REPO / "figures" / "claims.md").read_text()
    assert claims_table(shown) and claims_table(shown) == claims_table(computed)
