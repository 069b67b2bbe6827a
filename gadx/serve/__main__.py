import sys

from gadx.cli import run_main
from gadx.serve import main

raise SystemExit(run_main("gadx serve", main, sys.argv[1:]))
