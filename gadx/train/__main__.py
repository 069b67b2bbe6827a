"""`python -m gadx.train` and `torchrun -m gadx.train`."""
import sys

from gadx.train import main

sys.exit(main())
