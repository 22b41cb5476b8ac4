"""The few places the engine meets Airflow: connections, the masking key,
and S3 credentials. Imported only by DAGs and operators."""

from __future__ import annotations

import os
import re
from contextlib import contextmanager

import psycopg
from airflow.sdk import Asset, BaseHook, Variable

from prodclone.config import Config
from prodclone.drivers.base import CloneBusy, CloneError, SecretStore
from prodclone.errors import CoverageError, LeakError, RulesError, SeedError
from prodclone.marker import ADMIN_DB
from prodclone.masking import keys

# Emitted by prodclone_export when a new snapshot of the base is ready; its
# extra carries the snapshot id, row counts and the masking rules' hash.
BASE_SNAPSHOT = Asset(name="base snapshot", uri="prodclone://base-snapshot")


def dsn_for(conn_id: str) -> str:
    """A libpq DSN from an Airflow connection (host may be a socket directory)."""
    return dsn_from_connection(BaseHook.get_connection(conn_id))


def dsn_from_connection(c) -> str:
    params = {"host": c.host, "port": str(c.port) if c.port else None, "user": c.login,
              "password": c.password, "dbname": c.schema or ADMIN_DB}
    extra = c.extra_dejson or {}
    for k in ("sslmode", "sslrootcert", "sslcert", "sslkey", "application_name"):
        if k in extra:
            params[k] = extra[k]
    return psycopg.conninfo.make_conninfo(**{k: v for k, v in params.items() if v})


def masking_key(cfg: Config) -> bytes:
    """The Variable named in the config, else $PRODCLONE_MASKING_KEY. Never logged or returned to XCom."""
    value = Variable.get(cfg.key_variable, default=None) or os.environ.get(keys.KEY_ENV)
    return keys.load_key(value)


def s3_options(cfg: Config) -> dict | None:
    """boto3 client kwargs from the AWS connection, for s3:// storage; picklable for worker processes."""
    if not cfg.storage_url.startswith("s3://"):
        return None
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

    hook = AwsBaseHook(aws_conn_id=cfg.aws_conn_id, client_type="s3")
    creds = hook.get_credentials()
    opts = {"aws_access_key_id": creds.access_key, "aws_secret_access_key": creds.secret_key,
            "aws_session_token": creds.token, "region_name": hook.conn_region_name,
            "endpoint_url": hook.conn_config.endpoint_url}
    return {k: v for k, v in opts.items() if v}


def run_key(run_id: str) -> str:
    """A storage-safe name derived from the run, so retries reuse their own prefix."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", run_id).strip("_")


@contextmanager
def fail_fast():
    """Errors a retry cannot fix (rules, coverage, leaks, refusals) fail the
    task at once instead of burning retries; I/O and connection errors retry."""
    from airflow.sdk.exceptions import AirflowFailException

    try:
        yield
    except CloneBusy:
        raise  # another run holds the env or snapshot: a retry may succeed
    except (RulesError, CoverageError, LeakError, SeedError, CloneError) as exc:
        raise AirflowFailException(str(exc)) from exc


class VariableSecrets(SecretStore):
    """A clone's connection URL, password included, in the Airflow Variable
    ``prodclone_env_<env>_dsn``: readable by users allowed to read Variables
    (UI, REST API, `airflow variables get`), never written to XCom or logs."""

    @staticmethod
    def key(env: str) -> str:
        return f"prodclone_env_{env}_dsn"

    def put(self, env: str, url: str) -> None:
        from airflow.sdk.log import mask_secret

        mask_secret(url)
        Variable.set(self.key(env), url, description=f"prodclone clone {env}: connection URL (password included)")

    def delete(self, env: str) -> bool:
        if Variable.get(self.key(env), default=None) is None:
            return False
        Variable.delete(self.key(env))
        return True

    def location(self, env: str) -> str:
        return f"Airflow Variable {self.key(env)} (prodclone env credentials --env {env})"


def clone_driver(cfg: Config, base_dsn: str | None = None):
    """The configured driver. ``base_dsn`` overrides the prodclone_base lookup (the api-server reads
    connections through the ORM, not the task SDK)."""
    from prodclone.drivers import get_driver

    if cfg.driver == "velero":
        from types import SimpleNamespace

        from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
        from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook
        from kubernetes import client

        hook = KubernetesHook(conn_id=cfg.velero.kubernetes_conn_id)
        kube = SimpleNamespace(core=hook.core_v1_client, custom=hook.custom_object_client,
                               storage=client.StorageV1Api(hook.api_client))
        ec2 = AwsBaseHook(aws_conn_id=cfg.aws_conn_id, client_type="ec2").conn
        return get_driver(cfg, "", VariableSecrets(), kube=kube, ec2=ec2)
    return get_driver(cfg, base_dsn or dsn_for(cfg.base_conn_id), VariableSecrets())


def config_and_driver():
    """What every clone task starts with: the config as it is now, and its driver."""
    from prodclone.config import load_config

    cfg = load_config()
    return cfg, clone_driver(cfg)
