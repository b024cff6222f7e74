"""The real kopf runtime against KMock: what a cluster would see the operator do."""

from __future__ import annotations

import json

import pytest
from operator_kmock import CRONJOBS, JOBS, SnapshotsEmulator, running_operator, until

pytestmark = [pytest.mark.asyncio, pytest.mark.kmock(cls=SnapshotsEmulator)]

SPEC = {
    "volume": {"persistentVolumeClaim": {"claimName": "snapshots-data"}},
    "path": "incoming",
    "database": {"uriSecretRef": {"name": "snapshots-db", "key": "uri"}},
    "table": "users",
    "schedule": "*/5 * * * *",
}

SUMMARY = {"version": "0.1.0", "table": "users",
           "files": {"imported": 2, "skipped": 1, "failed": 0, "conflict": 0},
           "rows": 5, "rejected_rows": 0, "bytes": 457, "seconds": 0.41,
           "interrupted": False, "failures": [], "failures_omitted": 0}


async def test_create_makes_cronjob_and_job_then_ready(kmock: SnapshotsEmulator) -> None:
    async with running_operator(kmock) as op:
        created = await op.create_source("daily", SPEC)
        uid = created["metadata"]["uid"]
        cronjob = await until(lambda: op.get(CRONJOBS, "daily"), message="the CronJob")
        assert cronjob["metadata"]["ownerReferences"][0]["uid"] == uid
        jobs = await until(lambda: op.jobs_of("daily"), message="the immediate Job")
        assert len(jobs) == 1
        job = jobs[0]
        assert job["metadata"]["ownerReferences"][0]["uid"] == uid
        await op.finish_job(job["metadata"]["name"], succeeded=True,
                            message=json.dumps(SUMMARY))
        ready = await until(lambda: (c := op.condition("daily", "Ready")) and
                            c["status"] == "True" and c, message="Ready=True")
        print(ready)
        import logging; logging.getLogger("x").warning("READY")
        status = op.source("daily")["status"]
        print(json.dumps(status, indent=1))
        print(await op.metrics())
        print([e["reason"] for e in op.events("daily")])
