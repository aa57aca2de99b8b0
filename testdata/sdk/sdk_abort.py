"""A real SDK task that reports until it is aborted (issue 11 §3).

Every 0.2 s it reports the scalar progress/iter at iteration i, prints
"tick i", then writes i+1, the count of iterations it completed, to the
file named by SDK_COUNT_FILE (atomically), so the test can compare what the
task produced with what reached the server. With SDK_ABORT_CALLBACK=1 it
registers an abort callback that prints "abort callback ran".
"""
import os
import time

from clearml import Task

count_file = os.environ["SDK_COUNT_FILE"]

task = Task.init(project_name="sdk e2e", task_name="sdk abort")
if os.environ.get("SDK_ABORT_CALLBACK") == "1":
    task.register_abort_callback(lambda: print("abort callback ran", flush=True), callback_execution_timeout=20)
logger = task.get_logger()
i = 0
while True:
    logger.report_scalar("progress", "iter", value=float(i), iteration=i)
    print("tick %d" % i, flush=True)
    i += 1
    with open(count_file + ".tmp", "w") as f:
        f.write("%d %d\n" % (i, os.getpid()))
    os.rename(count_file + ".tmp", count_file)
    time.sleep(0.2)
