import json, time
def test_dump(unpaused, cli):
    code, out, err = cli("up", "--pr", "777001", "--snapshot", "snap-00000000-0000-000000")
    open("/tmp/ui-fail-err.txt", "w").write(err)
    api = unpaused
    runs = api._send("GET", "/api/v2/dags/prodclone_restore/dagRuns").body["dag_runs"]
    rid = runs[-1]["dag_run_id"]
    tis = api._send("GET", f"/api/v2/dags/prodclone_restore/dagRuns/{rid}/taskInstances").body["task_instances"]
    ti = [t for t in tis if t["state"] == "failed"][0]
    r = api._send("GET", f"/api/v2/dags/prodclone_restore/dagRuns/{rid}/taskInstances/{ti['task_id']}/logs/{ti['try_number']}?full_content=true")
    json.dump(r.body, open("/tmp/ui-fail-log.json", "w"), indent=1)
    code, out, err = cli("extend", "--pr", "777002", "--hours", "5")
    open("/tmp/ui-ext-err.txt", "w").write(err)
