from harness import capture
import sys
for i in map(int, sys.argv[1:]): capture(i)
