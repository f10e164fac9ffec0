import sys

from payq.cli import main

sys.exit(main())
