"""What `mateffnet prepare` imports before its work starts (mateffnet.prepare.processes)."""

import subprocess
import sys


def test_neither_the_main_process_nor_the_worker_server_imports_torchvision_up_front():
    # torchvision imports torch._dynamo, which takes about as long as torch: every prepare run's start waited for it
    code = ("import sys, mateffnet.commands.prepare, mateffnet.prepare.worker\n"
            "from mateffnet.prepare.processes import PRELOAD\n"
            "print([name for name in ('torchvision', 'torch._dynamo') if name in sys.modules], "
            "[name for name in PRELOAD if name.startswith('torchvision')])")
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.strip() == "[] []"
