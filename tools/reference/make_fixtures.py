"""Runs every tools/reference/fixtures_*.py script (or the ones named) to regenerate
Tests/Fixtures/. Run through `just fixtures`."""
import glob
import os
import runpy
import sys

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
names = sys.argv[1:]
scripts = sorted(glob.glob(os.path.join(here, "fixtures_*.py")))
if names:
    scripts = [s for s in scripts if any(os.path.basename(s) == f"fixtures_{n}.py" for n in names)]
for script in scripts:
    print(f"== {os.path.basename(script)}")
    sys.argv = [script]  # the scripts' own arguments (an executable path) are not ours
    runpy.run_path(script, run_name="__main__")
