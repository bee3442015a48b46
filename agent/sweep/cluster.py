"""Ray itself: the oldest version the sweep is tested with, a cluster address checked before Ray tries it, starting or joining Ray.

Ray is an optional extra (`pip install '.[cluster]'`) and is imported only inside these functions.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import sys

from common.errors import UserError

RAY_FLOOR = (2, 60)  # the oldest ray[tune] this package is tested with (pyproject: the `cluster` extra)
ADDRESS_TIMEOUT_S = 3.0  # seconds to wait for a cluster's address to accept a connection


def check_private(host: str, address: str) -> None:
    """Refuse a host that resolves to anything but loopback or a private network (a Ray cluster runs the code it is sent:
    one reachable from the internet is anyone's; docs/sweeps.md says how to secure one).

    Raises:
        UserError: the host does not resolve, or one of its addresses is public.
    """
    try:
        resolved = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except (socket.gaierror, UnicodeError) as e:
        raise UserError(f"--address {address}: {host!r} does not resolve ({e.strerror if isinstance(e, OSError) else e}); "
                        "give the head node's private IP and port") from None
    public = sorted(ip for ip in resolved if not _private_ip(ip))
    if public:
        raise UserError(f"--address {address}: {host} is a public address ({', '.join(public)}), and a Ray cluster runs any code sent "
                        "to it; join it over a private network or an SSH tunnel (docs/sweeps.md), or pass --allow-public-address")


def _private_ip(text: str) -> bool:
    ip = ipaddress.ip_address(text.split("%")[0])  # an IPv6 zone (fe80::1%eth0) is not part of the address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback or ip.is_private or ip.is_link_local


def check_address(address: str, timeout_s: float = ADDRESS_TIMEOUT_S, *, allow_public: bool = False) -> None:
    """Refuse a cluster address where no Ray cluster answers within `timeout_s` (`ray.init` would retry for 20 s and more).

    A TCP connection first (refused or silent: no cluster), then the call every
    Ray client makes first, GCS's GetClusterId, over gRPC with the same
    deadline: a proxy or another server that accepts the connection answers it
    as something else. `auto` (the cluster `ray start` left on this machine)
    is checked by Ray when it connects. Before any of that, the host is resolved
    and refused unless it is loopback or private (`allow_public` lifts that).

    Raises:
        UserError: a malformed address, Ray Client's ray://, a public host, or no Ray cluster answering.
    """
    if address == "auto":
        return
    if address.startswith("ray://"):
        raise UserError(f"--address {address}: Ray Client (ray://) is not supported; run the sweep on a node of the cluster "
                        "with the GCS address `ray start --head` printed (HOST:6379), or --address auto")
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise UserError(f"--address {address!r}: expected HOST:PORT (the address `ray start --head` printed, e.g. 10.0.0.5:6379) or auto")
    if not allow_public:
        check_private(host.strip("[]"), address)
    hint = "start one with `ray start --head`, or leave out --address to run on this machine"
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            pass
    except OSError as e:
        why = "no answer" if isinstance(e, TimeoutError) else (e.strerror or str(e))
        raise UserError(f"no Ray cluster answers at {address} ({why} within {timeout_s:g} s); {hint}") from None
    try:
        import grpc  # a TensorFlow dependency: here wherever the app is
    except ImportError:
        return
    channel = grpc.insecure_channel(address, options=[("grpc.enable_http_proxy", 0)])  # as Ray connects: directly
    try:
        call = channel.unary_unary("/ray.rpc.NodeInfoGcsService/GetClusterId", request_serializer=lambda b: b, response_deserializer=lambda b: b)
        call(b"", timeout=timeout_s)  # an empty GetClusterIdRequest
    except grpc.RpcError as e:
        code = e.code()
        if code == grpc.StatusCode.UNAUTHENTICATED:
            return  # a Ray cluster with token authentication: it answers; ray.init brings the token
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            raise UserError(f"no Ray cluster answers at {address} ({code.name.lower()} within {timeout_s:g} s); {hint}") from None
        raise UserError(f"{address} answers, but not as a Ray cluster (gRPC {code.name}); give the GCS address "
                        "`ray start --head` printed (port 6379 unless --port was given)") from None
    finally:
        channel.close()


def import_ray():
    """Ray, or one line on how to install it."""
    try:
        import ray
    except ImportError:
        raise UserError("the sweep runs on Ray Tune, which is not installed; pip install '.[cluster]' (or 'tfdqn[cluster]')") from None
    version = tuple(int(p) for p in re.findall(r"\d+", ray.__version__)[:2])
    if version < RAY_FLOOR:
        raise UserError(f"ray {ray.__version__} is older than {'.'.join(map(str, RAY_FLOOR))}, the oldest this sweep is tested with; "
                        "pip install -U '.[cluster]'")
    return ray


def start_ray(address: str | None, cpus: int | None):
    """Join the cluster at `address`, or start Ray on this machine (`cpus`: how many cores it may use; default all)."""
    import logging

    ray = import_ray()
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the legacy reporter is silent at verbose=0; the new one prints a header
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if not sys.stderr.isatty():
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")  # no colour codes in the "(run_trial pid=...)" prefix of a log file  # the workers inherit it (tfquiet.setup runs there too)
    # A new local cluster gets token authentication by default, and Ray says so in a warning on every start; the
    # warning that it is off (RAY_AUTH_MODE=disabled) still shows.
    logging.getLogger("ray._private.authentication.authentication_token_setup").addFilter(
        lambda record: "Token authentication is enabled" not in record.getMessage())
    # Tune's own hint on an interrupt names its Python API; ours (`resume with the same command`) follows it.
    logging.getLogger("ray.tune.tune").addFilter(lambda record: "Tuner.restore(" not in record.getMessage())
    # Each trial's worker imports numpy before our code runs, so tfquiet cannot set numpy's BLAS threads there: the
    # runtime env does, on every node, and the Nature CNN then acts in numpy as in train.py (agent.networks.NumpyPolicy).
    common = dict(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=True,
                  runtime_env={"env_vars": {"OPENBLAS_NUM_THREADS": "1"}})
    try:
        if address is None:
            # "local": always a new instance, never a `ray start` cluster that happens to run on this machine
            return ray.init(address="local", num_cpus=cpus, object_store_memory=256 * 1024**2, **common)
        return ray.init(address=address, **common)
    except (ConnectionError, TimeoutError, RuntimeError, ValueError) as e:
        where = f"the Ray cluster at {address}" if address else "Ray on this machine"
        raise UserError(f"cannot start or join {where}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
