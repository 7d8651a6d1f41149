import sys

from laws.cli import main

sys.exit(main())
