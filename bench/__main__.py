"""``python -m bench``: run the benchmark sections, write ``bench/results/<section>.json``, ``summary.md``, ``summary.png``.

    python -m bench                                # every section, median of 3 runs each
    python -m bench --sections overhead,llm --repeats 5
    python -m bench --quick                        # smoke test: tiny request counts, 1 repeat
    python -m bench --profile default              # how the platform is started (bench/profiles.py)
    python -m bench --summary-only                 # rebuild summary.md/png from the results present
    python -m bench soak [--quick]                 # the soak and fault run (bench/soak/): 10 min, or 60 s

Every figure is also reported as a ratio against its baseline, measured in the same run. Load goes to
loopback only and is bounded; run it on a machine that is otherwise quiet.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from pathlib import Path
from typing import Any

from bench.machine import describe_machine
from bench.processes import LOG_DIR, REPO_ROOT
from bench.profiles import PROFILES, get_profile
from bench.report import render_markdown, write_result, write_summary
from bench.sections import SECTIONS, section_runner
from bench.settings import RunSettings

logger = logging.getLogger("bench")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", metavar="SECTION", help="sections to run, as `python -m bench swap` (same as --sections)")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated, of: {', '.join(SECTIONS)}")
    parser.add_argument("--repeats", type=int, default=3, help="runs per figure (the median is reported)")
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny request counts and 1 repeat")
    parser.add_argument("--profile", default="default", choices=sorted(PROFILES), help="platform start-up profile")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results", help="results folder")
    parser.add_argument("--summary-only", action="store_true", help="only rebuild summary.md and summary.png")
    args = parser.parse_args(argv)
    args.sections = args.names or [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = [s for s in args.sections if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown sections {unknown}; known: {', '.join(SECTIONS)}")
    if args.quick:
        args.repeats = 1
    return args


def run_section(name: str, settings: RunSettings, out_dir: Path) -> dict[str, Any]:
    quick = ", quick" if settings.quick else ""
    logger.info("section %s: profile %s, %d repeat(s)%s", name, settings.profile.name, settings.repeats, quick)
    machine, began = describe_machine(), time.monotonic()
    tables, raw = section_runner(name)(settings)
    result = {
        "section": name, "profile": settings.profile.name, "quick": settings.quick, "repeats": settings.repeats,
        "machine": machine, "seconds": round(time.monotonic() - began, 1),
        "tables": [t.to_dict() for t in tables], "raw": raw,
    }
    write_result(out_dir, result)
    return result


def stop_on_sigterm() -> None:
    """SIGTERM (from ``timeout``, a CI runner, ``kill``) ends the run as Ctrl-C does: by an exception, so that
    each server's ``with`` block stops what it started. Without it, Python dies at once and the Ray cluster a
    section started stays up, taking CPU from every later run on the machine."""

    def _exit(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _exit)


def main(argv: list[str] | None = None) -> int:
    stop_on_sigterm()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["soak"]:  # not a section: no baselines, no ratios; its own report (bench/soak/)
        from bench.soak.run import main as soak_main

        return soak_main(argv[1:])
    args = parse_args(argv)
    if args.summary_only:
        return 0 if write_summary(args.out) else 1
    settings = RunSettings(repeats=args.repeats, quick=args.quick, profile=get_profile(args.profile))
    done, failed = [], []
    for name in args.sections:
        try:
            done.append(run_section(name, settings, args.out))
        except Exception:  # noqa: BLE001 - one broken section must not lose the others' results
            logger.exception("section %s failed (server logs in %s)", name, LOG_DIR)
            failed.append(name)
    write_summary(args.out)
    if done:
        print("\n" + render_markdown(done))
    if failed:
        print(f"failed sections: {', '.join(failed)} (logs in {LOG_DIR})", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
