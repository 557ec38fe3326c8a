import os
import signal
import subprocess
import sys
import time

import pytest

from monai_das.utils import run_child


def test_run_child_runs_like_subprocess_run():
    out = run_child([sys.executable, "-c", "print('ok')"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"
    with pytest.raises(subprocess.CalledProcessError):
        run_child([sys.executable, "-c", "raise SystemExit(3)"], check=True)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
def test_a_child_ends_when_its_runner_is_killed(tmp_path):
    """A runner (multiseed, own_data.py) killed with SIGKILL left the bundle training it started running."""
    pid_file = tmp_path / "child.pid"
    child = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    runner = (f"import sys; from monai_das.utils.process import run_child; "
              f"run_child([sys.executable, '-c', {child!r}])")
    parent = subprocess.Popen([sys.executable, "-c", runner])
    # the runner imports monai_das.utils (torch: 10 s on a loaded 2-core machine, more beside other test workers)
    deadline = time.monotonic() + 180
    while not (pid_file.is_file() and pid_file.read_text()) and time.monotonic() < deadline:
        assert parent.poll() is None, "the runner ended before starting its child"
        time.sleep(0.05)
    child_pid = int(pid_file.read_text())
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(child_pid, 0)
        except ProcessLookupError:
            break
        # a child that ended but was not reaped yet (reparented to init or a subreaper) is a zombie: gone too
        try:
            with open(f"/proc/{child_pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    break
        except FileNotFoundError:
            break
        time.sleep(0.05)
    else:
        os.kill(child_pid, signal.SIGKILL)
        pytest.fail("the child outlived its killed runner")
