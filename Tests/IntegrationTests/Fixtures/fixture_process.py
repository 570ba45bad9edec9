"""What every test fixture server does around its own work: die with the test, announce its port.

    from fixture_process import announce
    announce(port, arguments.port_file, arguments.parent_pid)

Python puts the running script's folder on sys.path, so the fixtures beside this file import it.
"""

import os
import threading
import time


def watch_parent(pid):
    """Exits the process once `pid` is gone, so a crashed test leaves no server behind."""
    while True:
        time.sleep(0.5)
        try:
            os.kill(pid, 0)
        except OSError:
            os._exit(0)


def announce(port, port_file=None, parent_pid=None):
    """Starts watching the parent (if given) and writes the port to `port_file` atomically."""
    if parent_pid:
        threading.Thread(target=watch_parent, args=(parent_pid,), daemon=True).start()
    if port_file:
        temporary = port_file + ".tmp"
        with open(temporary, "w") as file:
            file.write("%d\n" % port)
        os.replace(temporary, port_file)
