"""`python -m ferry.devcluster`: build the binaries or run the plane in the foreground.

python -m ferry.devcluster build
python -m ferry.devcluster up [--kubeconfig-out PATH] [--state-dir DIR] [--keep]
                              [--print-timing]
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from ferry.devcluster import binaries, cluster


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ferry.devcluster",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("build", help="build or locate the control-plane binaries")
    up = sub.add_parser("up", help="run the control plane until Ctrl-C or SIGTERM")
    up.add_argument("--kubeconfig-out", type=Path, help="also copy the kubeconfig here")
    up.add_argument(
        "--state-dir", type=Path, help="directory for certs, etcd data and logs (kept after exit)"
    )
    up.add_argument("--keep", action="store_true", help="keep the temp state dir on exit")
    up.add_argument(
        "--print-timing", action="store_true", help="print seconds to each milestone once ready"
    )
    return p


def _terminate(signum: int, frame: FrameType | None) -> None:
    # Turn SIGTERM into the same unwinding as Ctrl-C so teardown runs.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "build":
        try:
            print(binaries.ensure_binaries())
        except binaries.BuildError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        return 0

    signal.signal(signal.SIGTERM, _terminate)
    # A shell starting us in the background sets SIGINT to "ignore"; restore Ctrl-C.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    dev = cluster.DevCluster(state_dir=args.state_dir, keep=args.keep)
    try:
        with dev:
            kubeconfig = dev.kubeconfig_path
            if args.kubeconfig_out:
                args.kubeconfig_out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(kubeconfig, args.kubeconfig_out)
                args.kubeconfig_out.chmod(0o600)
                kubeconfig = args.kubeconfig_out
            if args.print_timing:
                for milestone, seconds in dev.timings.items():
                    print(f"{milestone:>24}: {seconds:6.1f}s")
            print(kubeconfig)
            print(f"export KUBECONFIG={kubeconfig}", flush=True)
            dev.progress.say(f"serving {dev.server_url}; Ctrl-C to stop")
            # Wait on an Event rather than signal.pause(): it wakes for the
            # KeyboardInterrupt raised by either Ctrl-C or the SIGTERM handler.
            threading.Event().wait()
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
    except (binaries.BuildError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
