"""A task that uses the real ClearML SDK the way users' code does.

The agent runs it (CLEARML_TASK_ID is set), so Task.init() reuses the
agent's task. What the test cannot see on the servers goes to the JSON file
named by SDK_E2E_REPORT. Secret values are never printed or written.
"""
import json
import os
import sys

from clearml import Task
from clearml.config import config_obj

report_path = os.environ["SDK_E2E_REPORT"]
iterations = int(os.environ.get("SDK_E2E_ITERATIONS", "5"))

task = Task.init(project_name="sdk e2e", task_name="sdk e2e")
print("sdk task id %s" % task.id, flush=True)

params = task.connect({"lr": 0.25, "epochs": iterations, "name": "naïve <a&b>"})

logger = task.get_logger()
for i in range(iterations):
    logger.report_scalar("loss", "train", value=1.0 / (i + 1), iteration=i)
    print("iteration %d" % i, flush=True)
logger.report_text("sdk text line <&> ✓")

task.register_abort_callback(lambda: print("abort callback ran", flush=True), callback_execution_timeout=7)

task.upload_artifact("stats", artifact_object={"rows": iterations, "label": "ok"}, wait_on_upload=True)
artifact = task.artifacts.get("stats")
print("artifact uploaded to %s" % (artifact.url if artifact else None), flush=True)

roundtrip = {}
section = config_obj.get("sdk.e2e_roundtrip", None)
if section is not None:
    for key in section.keys():
        roundtrip[key] = section.get(key)

out = {
    "task_id": task.id,
    "connected": dict(params),
    "parameters": task.get_parameters(),
    "artifact_url": artifact.url if artifact else None,
    "env_names": sorted(os.environ),
    "config_file": os.environ.get("CLEARML_CONFIG_FILE"),
    "roundtrip": roundtrip,
    "python": sys.executable,
}
with open(report_path + ".tmp", "w", encoding="utf-8") as f:
    json.dump(out, f)
os.rename(report_path + ".tmp", report_path)
print("sdk task done", flush=True)
