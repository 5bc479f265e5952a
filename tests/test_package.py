import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def test_importing_the_package_does_not_import_torch():
    code = "import sys, mateffnet; print('torch' in sys.modules, mateffnet.__version__)"
    result = subprocess.run([sys.executable, "-c", code], env={"PYTHONPATH": str(SRC)},
                            capture_output=True, text=True, check=True)
    loaded, version = result.stdout.split()
    assert loaded == "False"
    assert version.count(".") == 2


def test_lazy_names_resolve():
    import mateffnet

    assert mateffnet.StreamNet.__name__ == "StreamNet"
