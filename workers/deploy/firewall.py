"""The host firewall of deploy networks: what Docker's bridge isolation leaves open.

Docker keeps bridge networks apart, but an app can still open connections to the host
itself through its bridge's gateway address (every service listening on 0.0.0.0: an SSH
daemon, a database or an API bound to all interfaces) and, through the engine's NAT, to
private networks around the host (other machines' Redis or PostgreSQL, the cloud metadata
service at 169.254.169.254). Two iptables chains close both for every bridge whose name
starts with `dy-` (workers/deploy/networks.py names them so):

- `DOCKYARD-DEPLOY-IN`, jumped to from `INPUT` for `-i dy-+`: replies to connections the
  host opened (the port publishing, a reverse proxy on the host, the health checks) pass;
  any connection an app opens to the host is rejected.
- `DOCKYARD-DEPLOY-OUT`, jumped to from Docker's `DOCKER-USER` for traffic leaving a deploy
  bridge for anything but a deploy bridge: replies and DNS (port 53) pass; new connections
  to DEPLOY_EGRESS_DENY (private and link-local ranges by default) are rejected. The public
  internet stays reachable; traffic between two deploy bridges is already dropped by Docker.

The rules need root on the engine's host. DEPLOY_FIREWALL=auto (default) applies them when
the worker runs there as root with iptables (`make run`, the tests) and otherwise warns once;
`iptables` makes deploys fail (retryable) rather than run without them; `off` leaves them to
the operator, who can print them with `python -m workers.deploy.firewall`.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import threading
import time

from shared.config import Settings, get_settings
from shared.errors import RetryableJobError

log = logging.getLogger(__name__)
CHAIN_IN = "DOCKYARD-DEPLOY-IN"
CHAIN_OUT = "DOCKYARD-DEPLOY-OUT"
BRIDGES = "dy-+"
_ESTABLISHED = ["-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "RETURN"]
_lock = threading.Lock()
_applied: tuple[str, ...] | None = None
_applied_at = 0.0
#: Seconds between checks that the rules are still there (an operator's `iptables -F` or a
#: firewall service reloading its rules would drop them): a check is a few `iptables -C`.
RECHECK = 60.0
_warned = False


def chain_rules(settings: Settings) -> dict[str, list[list[str]]]:
    """The rules of each chain, in order (arguments after `-A CHAIN`)."""
    inbound = [
        _ESTABLISHED,
        ["-p", "tcp", "-j", "REJECT", "--reject-with", "tcp-reset"],
        ["-j", "REJECT"],
    ]
    # DNS stays open: the engine's embedded resolver forwards an app's lookups from the
    # app's own network namespace, often to a resolver on a private network.
    dns = [["-p", proto, "--dport", "53", "-j", "RETURN"] for proto in ("udp", "tcp")]
    denied = [["-d", cidr, "-j", "REJECT"] for cidr in settings.deploy_egress_deny]
    outbound = [_ESTABLISHED, *dns, *denied]
    return {CHAIN_IN: inbound, CHAIN_OUT: outbound}


JUMPS = (
    ("INPUT", ["-i", BRIDGES, "-j", CHAIN_IN]),
    ("DOCKER-USER", ["-i", BRIDGES, "!", "-o", BRIDGES, "-j", CHAIN_OUT]),
)


def commands(settings: Settings) -> list[list[str]]:
    """The iptables commands an operator runs once per boot on each engine host."""
    out: list[list[str]] = []
    for chain, rules in chain_rules(settings).items():
        out += [["iptables", "-N", chain], ["iptables", "-F", chain]]
        out += [["iptables", "-A", chain, *rule] for rule in rules]
    out += [["iptables", "-I", parent, "1", *jump] for parent, jump in JUMPS]
    return out


def _iptables(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["iptables", "-w", "5", *args], capture_output=True, text=True, check=check, timeout=30
    )


def _sync_chain(chain: str, rules: list[list[str]]) -> None:
    """Make `chain` hold exactly `rules`, rewriting it only when it differs (a rewrite
    briefly empties it)."""
    if _iptables("-S", chain, check=False).returncode != 0:
        _iptables("-N", chain)
    count = len(_iptables("-S", chain).stdout.splitlines()) - 1  # the first line is -N
    if count == len(rules) and all(
        _iptables("-C", chain, *rule, check=False).returncode == 0 for rule in rules
    ):
        return
    _iptables("-F", chain)
    for rule in rules:
        _iptables("-A", chain, *rule)


def apply(settings: Settings) -> None:
    """Install or refresh the chains and the jumps to them (idempotent)."""
    for chain, rules in chain_rules(settings).items():
        _sync_chain(chain, rules)
    for parent, jump in JUMPS:
        if _iptables("-C", parent, *jump, check=False).returncode != 0:
            _iptables("-I", parent, "1", *jump)


def _can_apply() -> str | None:
    """Why the rules cannot be applied from here, or None."""
    if shutil.which("iptables") is None:
        return "iptables is not installed"
    if os.geteuid() != 0:
        return "the worker is not root"
    docker_host = os.environ.get("DOCKER_HOST", "")
    if docker_host and not docker_host.startswith("unix://"):
        return f"the engine is remote ({docker_host})"
    return None


def ensure(settings: Settings) -> None:
    """Apply the rules, then check them again at most every RECHECK seconds
    (DEPLOY_FIREWALL decides what a failure means)."""
    global _applied, _applied_at, _warned
    if settings.deploy_firewall == "off":
        return
    key = settings.deploy_egress_deny
    with _lock:
        if _applied == key and time.monotonic() - _applied_at < RECHECK:
            return
        reason = _can_apply()
        try:
            if reason is not None:
                raise RuntimeError(reason)
            apply(settings)
            _applied, _applied_at = key, time.monotonic()
        except (RuntimeError, OSError, subprocess.SubprocessError) as error:
            detail = getattr(error, "stderr", None) or str(error)
            if settings.deploy_firewall == "iptables":
                raise RetryableJobError(
                    "firewall_unavailable", f"The deploy firewall could not be applied: {detail}"
                ) from error
            if not _warned:
                _warned = True
                log.warning(
                    "deploy firewall not applied (%s): apps can reach services listening on "
                    "the engine host's addresses and private networks; apply the rules of "
                    "`python -m workers.deploy.firewall` on the engine host",
                    str(detail).strip(),
                    extra={"event": "deploy_firewall_missing"},
                )


def main() -> None:
    """Print the rules (shell commands), or apply them with `--apply`."""
    settings = get_settings()
    if "--apply" in sys.argv[1:]:
        apply(settings)
        return
    for command in commands(settings):
        print(" ".join(command))


if __name__ == "__main__":
    main()
