"""The postgres image honours the official image's contract (_FILE secrets, initdb args,
init scripts, pg_isready) and refuses to initialise without a password."""

from __future__ import annotations

import pytest

from lab.common import docker

from .support import container_logs, run_container, wait_for, write_secret

PASSWORD = "from-a-file-not-the-env"


def test_initialises_from_file_secrets_and_init_scripts(images, tmp_path):
    secret = write_secret(tmp_path, "pg_password", PASSWORD + "\n")
    initdb = tmp_path / "initdb"
    initdb.mkdir()
    (initdb / "10-seed.sql").write_text("CREATE TABLE seeded (answer int); INSERT INTO seeded VALUES (42);\n")
    user_file = write_secret(tmp_path, "pg_user", "pliers")
    container = run_container(
        images["postgres"],
        name="pliers-test-pg-files",
        options=(
            "-e",
            "POSTGRES_USER_FILE=/run/secrets/pg_user",
            "-e",
            "POSTGRES_DB=pliersdb",
            "-e",
            "POSTGRES_PASSWORD_FILE=/run/secrets/pg_password",
            "-e",
            "POSTGRES_INITDB_ARGS=--data-checksums",
            "-v",
            f"{secret}:/run/secrets/pg_password:ro",
            "-v",
            f"{user_file}:/run/secrets/pg_user:ro",
            "-v",
            f"{initdb}:/docker-entrypoint-initdb.d:ro",
        ),
    )
    try:
        wait_for(
            lambda: (
                docker("exec", container, "pg_isready", "-h", "127.0.0.1", "-U", "pliers", check=False).returncode == 0
            ),
            timeout=60,
            what=f"pg_isready over TCP (logs: {container_logs(container)})",
        )
        # Over the network, as other containers connect (initdb trusts 127.0.0.1, as in the official image).
        address = docker("inspect", "--format", "{{.NetworkSettings.IPAddress}}", container).stdout.strip()
        query = (
            "SELECT current_database(), current_user, (SELECT answer FROM seeded), "
            "current_setting('data_checksums'), current_setting('listen_addresses')"
        )
        row = docker(
            "exec",
            "-e",
            f"PGPASSWORD={PASSWORD}",
            container,
            "psql",
            "-h",
            address,
            "-U",
            "pliers",
            "-d",
            "pliersdb",
            "-tAc",
            query,
        ).stdout.strip()
        assert row == "pliersdb|pliers|42|on|*"

        wrong = docker(
            "exec",
            "-e",
            "PGPASSWORD=guess",
            container,
            "psql",
            "-h",
            address,
            "-U",
            "pliers",
            "-d",
            "pliersdb",
            "-c",
            "SELECT 1",
            check=False,
        )
        assert wrong.returncode != 0 and "password authentication failed" in wrong.stderr

        env = docker("inspect", "--format", "{{json .Config.Env}}", container).stdout
        assert PASSWORD not in env and "POSTGRES_PASSWORD_FILE" in env
        assert docker("exec", container, "stat", "-c", "%U", "/proc/1").stdout.strip() == "postgres"
    finally:
        docker("rm", "-f", container)


@pytest.mark.parametrize("secret", ["unset", "empty-file"])
def test_refuses_to_initialise_without_a_password(images, tmp_path, secret):
    options: tuple[str, ...] = ()
    if secret == "empty-file":
        empty = write_secret(tmp_path, "empty", "")
        options = ("-e", "POSTGRES_PASSWORD_FILE=/run/secrets/empty", "-v", f"{empty}:/run/secrets/empty:ro")
    container = run_container(images["postgres"], name=f"pliers-test-pg-{secret}", options=options)
    try:

        def exit_code() -> str | None:
            state = docker("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", container).stdout.split()
            return state[1] if state[0] == "exited" else None

        assert wait_for(exit_code, timeout=30, what="the container to exit") != "0"
        assert "superuser password is not specified" in container_logs(container)
    finally:
        docker("rm", "-f", container)
