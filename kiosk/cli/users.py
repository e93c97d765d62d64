"""`kiosk user ...` and `kiosk token ...`: who may use the kiosk's pages and API.

There is no default password: the first supervisor is made here, on the kiosk itself. These
commands only open the database (not the model or the camera), so they work while the kiosk
runs.
"""

from __future__ import annotations

import sys

import click

from kiosk.store import Store, accounts

ROLE_CHOICE = click.Choice(list(accounts.ROLES))


def _store(obj: object) -> Store:
    return Store(obj.config.db_path)  # type: ignore[attr-defined]


@click.group("user")
def user_group() -> None:
    """Add, list and disable the people who sign in to the kiosk's pages."""


@user_group.command("add")
@click.argument("name")
@click.option("--role", type=ROLE_CHOICE, required=True, help="staff, technician or supervisor.")
@click.option(
    "--password-stdin", is_flag=True, help="Read the password from the first line of stdin."
)
@click.pass_obj
def user_add(obj: object, name: str, role: str, password_stdin: bool) -> None:
    """Create user NAME (the password is asked twice unless --password-stdin)."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    store = _store(obj)
    try:
        user = accounts.add_user(store, name, role, password, actor="cli")
    finally:
        store.close()
    click.echo(f"user {user.username} added ({user.role})")


@user_group.command("list")
@click.pass_obj
def user_list(obj: object) -> None:
    """List users, their roles and whether they are disabled."""
    store = _store(obj)
    try:
        users = accounts.list_users(store)
    finally:
        store.close()
    if not users:
        click.echo("no users yet: run `kiosk user add NAME --role supervisor`")
    for user in users:
        state = "disabled" if user.disabled else "active"
        click.echo(f"{user.username}\t{user.role}\t{state}\t{user.created_at}")


@user_group.command("disable")
@click.argument("name")
@click.pass_obj
def user_disable(obj: object, name: str) -> None:
    """Stop NAME from signing in and end their sessions (past actions stay in the audit log)."""
    store = _store(obj)
    try:
        accounts.disable_user(store, name, actor="cli")
    finally:
        store.close()
    click.echo(f"user {name} disabled; their open sessions have ended")


@user_group.command("password")
@click.argument("name")
@click.option(
    "--password-stdin", is_flag=True, help="Read the password from the first line of stdin."
)
@click.pass_obj
def user_password(obj: object, name: str, password_stdin: bool) -> None:
    """Give NAME a new password; every browser signed in as NAME is signed out."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("New password", hide_input=True, confirmation_prompt=True)
    store = _store(obj)
    try:
        accounts.set_password(store, name, password, actor="cli")
    finally:
        store.close()
    click.echo(f"password of {name} changed; their open sessions have ended")


@click.group("token")
def token_group() -> None:
    """API tokens for scripts (``Authorization: Bearer <token>``)."""


@token_group.command("add")
@click.argument("name")
@click.option("--role", type=ROLE_CHOICE, required=True, help="staff, technician or supervisor.")
@click.pass_obj
def token_add(obj: object, name: str, role: str) -> None:
    """Create a token called NAME; it is printed once and cannot be shown again."""
    store = _store(obj)
    try:
        token = accounts.add_token(store, name, role, actor="cli")
    finally:
        store.close()
    click.echo(token)
    click.echo("store this token now: only its hash is kept", err=True)


@token_group.command("list")
@click.pass_obj
def token_list(obj: object) -> None:
    """List tokens: id, name, role, created, last used (the secrets are not stored)."""
    store = _store(obj)
    try:
        tokens = accounts.list_tokens(store)
    finally:
        store.close()
    if not tokens:
        click.echo("no API tokens: `kiosk token add NAME --role staff` makes one")
    for t in tokens:
        click.echo(f"{t.id}\t{t.name}\t{t.role}\t{t.created_at}\t{t.last_used_at or 'never used'}")


@token_group.command("revoke")
@click.argument("which")
@click.pass_obj
def token_revoke(obj: object, which: str) -> None:
    """Delete the token with id or name WHICH; scripts using it get 401 from then on."""
    store = _store(obj)
    try:
        token = accounts.revoke_token(store, which, actor="cli")
    finally:
        store.close()
    click.echo(f"token {token.name} ({token.id}) revoked")


COMMANDS: list[click.Command] = [user_group, token_group]
