"""Peak memory as the RSS tests measure it: this process's own, not its parent's."""
import subprocess
import sys
import textwrap

MiB = 1 << 20

# A 600 MiB parent starts a small child: the child's ru_maxrss carries the parent's size
# across exec (the trap that made the decode tests read 1.1 GB inside the suite), VmHWM not.
PARENT = textwrap.dedent("""
    import subprocess, sys
    big = bytearray(600 << 20)
    big[::4096] = b"x" * len(big[::4096])
    child = "import resource; from openwit.pipeline.common.memory import peak_rss_bytes; " \\
            "print(peak_rss_bytes(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)"
    print(subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, check=True).stdout)
""")


def test_a_childs_peak_is_its_own_not_its_parents():
    out = subprocess.run([sys.executable, "-c", PARENT], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    own, inherited = map(int, out.stdout.split())
    assert inherited > 600 * MiB  # the trap is real on this kernel
    assert own < 200 * MiB


def test_a_fresh_process_sees_what_it_touches():
    code = ("from openwit.pipeline.common.memory import peak_rss_bytes; b = bytearray(300 << 20); "
            "b[::4096] = b'z' * len(b[::4096]); print(peak_rss_bytes())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert int(out.stdout) > 300 * MiB
