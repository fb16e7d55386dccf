"""`python -m coursesite`: the course site, from a fresh clone or from the copies the
tests left.

    MNIST_DIR=../shared/mnist python -m coursesite [--out build/site] [--jobs N] [--fresh]

1. Every tutorial without a current executed copy in build/executed/ is executed in fast
   mode (TWINNET_FAST=1), N at a time (default: one per usable CPU).
2. The generated pages are written into docs/ (coursesite.pages).
3. Sphinx builds the HTML with warnings as errors (-W --keep-going): a broken link, a
   missing reference or a docstring Sphinx cannot read fails the build.

Exit status 0 when the site is built, 1 when a notebook or Sphinx failed, 2 for bad
arguments. Open the site with `python -m http.server -d build/site` (or the folder's
index.html).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from coursesite import notebooks, pages
from plumbing.args import output_folder, positive_int

ROOT = notebooks.ROOT
DEFAULT_OUT = ROOT / "build" / "site"
DOCTREES = ROOT / "build" / "doctrees"


def usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m coursesite", description=(
        "Build the course site: execute the tutorials not yet executed, then Sphinx."))
    parser.add_argument("--out", type=output_folder, default=str(DEFAULT_OUT), metavar="DIR",
                        help="the site's folder (default build/site)")
    parser.add_argument("--jobs", type=positive_int, default=usable_cpus(), metavar="N",
                        help="notebooks executed at once (default: one per usable CPU)")
    parser.add_argument("--fresh", action="store_true",
                        help="execute every tutorial again, even those with a current copy")
    return parser, parser.parse_args(argv)


def execute_missing(paths: list[Path], jobs: int, mnist_dir: str) -> list[str]:
    """Execute `paths` in fast mode, `jobs` at a time; returns the failures' messages."""
    failures = []
    with tempfile.TemporaryDirectory(prefix="twinnet-site-") as work, \
            ProcessPoolExecutor(max_workers=jobs) as pool:
        started = time.perf_counter()
        futures = {}
        for path in paths:
            workdir = Path(work) / path.stem
            workdir.mkdir()
            futures[pool.submit(notebooks.run_one, str(path), str(workdir), mnist_dir)] = path.stem
        for future in as_completed(futures):
            try:
                future.result()
                print(f"  executed {futures[future]} "
                      f"({time.perf_counter() - started:.0f} s since the start)", flush=True)
            except Exception as err:  # the cell and its traceback, as nbclient words them
                failures.append(f"{futures[future]}: {err}")
    return failures


def sphinx(out: Path) -> int:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3"))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    command = [sys.executable, "-m", "sphinx", "-b", "html", "-W", "--keep-going", "-q",
               "-d", str(DOCTREES), str(pages.DOCS), str(out)]
    return subprocess.run(command, env=env, check=False).returncode


def html_pages(out: Path) -> list[Path]:
    """The site's pages: every HTML file but Sphinx's own (search, index of names)."""
    return [p for p in out.rglob("*.html")
            if not p.relative_to(out).parts[0].startswith("_")
            and p.name not in ("search.html", "genindex.html", "py-modindex.html")]


def main(argv=None) -> int:
    parser, args = parse_args(argv)
    tutorials = notebooks.tutorials()
    stale = [p for p in tutorials if args.fresh or notebooks.executed_copy(p) is None]
    mnist_dir = os.environ.get("MNIST_DIR")
    if stale and not mnist_dir:
        parser.error(f"MNIST_DIR is not set: {len(stale)} tutorial(s) to execute need real "
                     "MNIST (MNIST_DIR=../shared/mnist)")
    started = time.perf_counter()
    if stale:
        print(f"executing {len(stale)} of {len(tutorials)} tutorials in fast mode, "
              f"{min(args.jobs, len(stale))} at a time", flush=True)
        failures = execute_missing(stale, args.jobs, mnist_dir)
        if failures:
            print("\n\n".join(failures), file=sys.stderr)
            print(f"site not built: {len(failures)} tutorial(s) failed", file=sys.stderr)
            return 1
    else:
        print(f"all {len(tutorials)} tutorials already executed (build/executed/)")
    executed = time.perf_counter()
    pages.place_notebooks([notebooks.copy_path(p) for p in tutorials])
    kinds, modules = pages.write_twin_pages(), pages.write_api_pages()
    print(f"generated {len(kinds)} side-by-side layer pages, {len(modules)} API pages; "
          "running Sphinx", flush=True)
    code = sphinx(args.out)
    done = time.perf_counter()
    if code != 0:
        print(f"site not built: Sphinx failed (exit status {code})", file=sys.stderr)
        return 1
    print(f"site: {args.out}/index.html, {len(html_pages(args.out))} pages; executing "
          f"{executed - started:.0f} s, Sphinx {done - executed:.0f} s "
          f"(python -m http.server -d {args.out})")
    return 0
