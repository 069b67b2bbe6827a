import sys

from gadx.serve import main

raise SystemExit(main(sys.argv[1:]))
