import sys

from deploy.local.services import main

sys.exit(main(sys.argv[1:]))
