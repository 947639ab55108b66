"""A subset of the TrueNAS apps catalog's rendering library, written for WormFS.

The catalog (truenas/apps) renders each app's templates/docker-compose.yaml, a Jinja2 template,
over its Python library (library/2.3.x, copied into every app as templates/library/base_v2_3_x
and reached from the template as ``ix_lib.base``). That library is not published on PyPI, and its
code is not copied here: this module is our own implementation of the part of its API that
packaging/truenas/templates/docker-compose.yaml uses, written after reading library 2.3.11
(truenas/apps 5a5f8aa), producing the same output shape (the compose file TrueNAS runs):

- ``Render(values)``: ``add_container``, ``render`` (x-notes, x-portals, x-action-required,
  services), ``notes`` (``add_info``/``add_warning``/``set_body``; the notes text with the
  per-container security section), ``portals.add``, ``funcs.fail``; the values must not change
  while rendering.
- ``Container``: image from ``values.images``; ``platform: linux/amd64``, ``tty``/``stdin_open``
  false, ``restart: unless-stopped``, ``cap_drop: [ALL]``, ``security_opt:
  [no-new-privileges=true]``, ``group_add`` 568, ``privileged: false``, ``network_mode: host``
  when ``values.network.host_network``, ``deploy.resources.limits`` (cpus, memory from
  ``values.resources.limits``, defaults 2 and 4096 MB), environment with the library's automatic
  variables (TZ, UMASK, UMASK_SET, PUID/UID/USER_ID, PGID/GID/GROUP_ID, NVIDIA_VISIBLE_DEVICES),
  labels from ``values.labels``; ``set_user``, ``set_grace_period``, ``set_command``,
  ``set_entrypoint``, ``add_caps``, ``add_port`` (bind modes published/exposed/none, host IPs
  with the IPv4/IPv6 wildcard pairing), ``add_storage`` (``host_path`` and ``ix_volume`` bind
  mounts with propagation and the restricted host paths), ``healthcheck`` (custom test,
  interval, timeout, retries, start period, start interval; a container without a test is an
  error), ``environment.add_env`` and ``add_user_envs``.

What is left out: dependency containers (``tpl.deps``: permissions, postgres, redis...), configs,
devices and GPUs, networks other than the default, NFS/CIFS/tmpfs volumes, the TrueNAS
middleware port-conflict check (the library skips it off TrueNAS too) and ACLs. A template that
calls them fails here with an AttributeError rather than rendering something different.
"""

import copy
import ipaddress
import json
import re
from pathlib import Path


class RenderError(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# validations (library/2.3.11/validations.py, the parts used here)

RESTRICTED_IN = (Path("/mnt"), Path("/"))
RESTRICTED = (
    Path("/mnt/.ix-apps"),
    Path("/data"),
    Path("/var/db"),
    Path("/root"),
    Path("/conf"),
    Path("/audit"),
    Path("/var/run/middleware"),
    Path("/home"),
    Path("/boot"),
    Path("/var/log"),
)


def _valid_path_or_raise(path):
    if path == "":
        raise RenderError(f"Path [{path}] cannot be empty")
    if not path.startswith("/"):
        raise RenderError(f"Path [{path}] must start with /")
    if "//" in path:
        raise RenderError(f"Path [{path}] cannot contain [//]")
    return path


def valid_fs_path_or_raise(path):
    if path == "/":
        raise RenderError(f"Path [{path}] cannot be [/]")
    return _valid_path_or_raise(path)


def allowed_fs_host_path_or_raise(path, is_ix_volume=False):
    real = Path(path).resolve()
    restricted = RESTRICTED if not is_ix_volume else [r for r in RESTRICTED if r != Path("/mnt/.ix-apps")]
    if any(real.is_relative_to(r) for r in restricted) or real in RESTRICTED_IN:
        raise RenderError(f"Path [{path}] is not allowed to be mounted.")
    return path


def valid_port_or_raise(port):
    if not isinstance(port, int) or port < 1 or port > 65535:
        raise RenderError(f"Invalid port [{port}]. Valid ports are between 1 and 65535")
    return port


def valid_choice(kind, value, choices):
    if value not in choices:
        raise RenderError(f"{kind} [{value}] is not valid. Valid options are: [{', '.join(choices)}]")
    return value


def escape_dollar(text):
    return text.replace("$", "$$")


# ---------------------------------------------------------------------------------------------
# parts of a container


class Healthcheck:
    def __init__(self):
        self._test = ""
        self._interval_sec = 30
        self._timeout_sec = 5
        self._retries = 5
        self._start_period_sec = 15
        self._start_interval_sec = 2
        self._disabled = False

    def disable(self):
        self._disabled = True

    def set_custom_test(self, test):
        if isinstance(test, list) and test and test[0] == "CMD" and any(str(t).startswith("$") for t in test):
            raise RenderError(f"Healthcheck with 'CMD' cannot contain shell variables '{test}'")
        if self._disabled:
            raise RenderError("Cannot set custom test when healthcheck is disabled")
        self._test = test

    def set_interval(self, v):
        self._interval_sec = v

    def set_timeout(self, v):
        self._timeout_sec = v

    def set_retries(self, v):
        self._retries = v

    def set_start_period(self, v):
        self._start_period_sec = v

    def set_start_interval(self, v):
        self._start_interval_sec = v

    def render(self):
        if self._disabled:
            return {"disable": True}
        if not self._test:
            raise RenderError("Healthcheck test is not set")
        test = escape_dollar(self._test) if isinstance(self._test, str) else [escape_dollar(str(t)) for t in self._test]
        return {
            "test": test,
            "retries": self._retries,
            "interval": f"{self._interval_sec}s",
            "timeout": f"{self._timeout_sec}s",
            "start_period": f"{self._start_period_sec}s",
            "start_interval": f"{self._start_interval_sec}s",
        }


class Resources:
    def __init__(self, values):
        limits = values.get("resources", {}).get("limits", {})
        cpus = str(limits.get("cpus", 2.0))
        if not re.match(r"^[1-9][0-9]*(\.[0-9]+)?$", cpus):
            raise RenderError(f"Expected cpus to be a number or a float (minimum 1.0), got [{cpus}]")
        memory = str(limits.get("memory", 4096))
        if not re.match(r"^[1-9][0-9]*$", memory):
            raise RenderError(f"Expected memory to be a number, got [{memory}]")
        self._limits = {"cpus": cpus, "memory": f"{memory}M"}

    def render(self):
        return {"resources": {"limits": self._limits}}


class Environment:
    def __init__(self, values):
        self._auto = {}
        self._dev = {}
        self._user = {}
        if not values.get("skip_generic_variables", False):
            self._auto["TZ"] = values.get("TZ", "Etc/UTC")
            self._auto["UMASK"] = values.get("UMASK", "002")
            self._auto["UMASK_SET"] = values.get("UMASK", "002")
            run_as = values.get("run_as", {})
            user, group = run_as.get("user"), run_as.get("group")
            if user:
                self._auto.update({"PUID": user, "UID": user, "USER_ID": user})
            if group:
                self._auto.update({"PGID": group, "GID": group, "GROUP_ID": group})
        self._auto["NVIDIA_VISIBLE_DEVICES"] = "void"

    @staticmethod
    def _fmt(v):
        return str(v).lower() if isinstance(v, bool) else str(v)

    def add_env(self, name, value):
        if not name:
            raise RenderError(f"Environment variable name cannot be empty. [{name}]")
        if name in self._dev:
            raise RenderError(f"Found duplicate environment variable [{name}] in application developer environment variables.")
        self._dev[name] = value

    def add_user_envs(self, user_env):
        for item in user_env:
            if not item.get("name"):
                raise RenderError(f"Environment variable name cannot be empty. [{item}]")
            if item["name"] in self._user:
                raise RenderError(f"Found duplicate environment variable [{item['name']}] in user environment variables.")
            self._user[item["name"]] = item.get("value")

    def render(self):
        out = {k: self._fmt(v) for k, v in self._auto.items()}
        for k, v in self._dev.items():
            if k in out:
                raise RenderError(f"Environment variable [{k}] is already defined automatically from the library.")
            out[k] = self._fmt(v)
        for k, v in self._user.items():
            if k in out:
                raise RenderError(f"Environment variable [{k}] is already defined from the application developer.")
            out[k] = self._fmt(v)
        return {k: escape_dollar(v) for k, v in out.items()}


class Ports:
    def __init__(self):
        self._ports = {}

    def add(self, host_port, container_port, protocol, host_ip, mode):
        host_port = valid_port_or_raise(host_port)
        container_port = valid_port_or_raise(container_port)
        valid_choice("Port Protocol", protocol, ("tcp", "udp"))
        valid_choice("Port Mode", mode, ("ingress", "host"))
        try:
            family = ipaddress.ip_address(host_ip).version
        except ValueError:
            raise RenderError(f"Invalid IP address [{host_ip}]")
        key = f"{host_port}_{host_ip}_{protocol}_{family}"
        if key in self._ports:
            raise RenderError(f"Port [{host_port}/{protocol}/ipv{family}] already added for [{host_ip}]")
        self._ports[key] = {
            "published": host_port,
            "target": container_port,
            "protocol": protocol,
            "mode": mode,
            "host_ip": host_ip,
        }

    def has_ports(self):
        return bool(self._ports)

    def render(self):
        def same(a, b):
            return all(a.get(k, "_") == b.get(k, "_") for k in ("published", "target", "protocol", "host_ip"))

        specific = [p.copy() for p in self._ports.values() if p["host_ip"] not in ("0.0.0.0", "::")]
        wildcard = [p.copy() for p in self._ports.values() if p["host_ip"] in ("0.0.0.0", "::")]
        out = list(specific)
        for w in wildcard:
            other = dict(w, host_ip="::" if w["host_ip"] == "0.0.0.0" else "0.0.0.0")
            p = w.copy()
            if any(same(other, x) for x in wildcard):
                p.pop("host_ip")
            if p not in out:
                out.append(p)
        return sorted(out, key=lambda p: f"{p['published']}_{p['target']}_{p['protocol']}_{p.get('host_ip', '_')}")


class Storage:
    def __init__(self):
        self._mounts = {}

    def add(self, render, mount_path, config):
        mount_path = valid_fs_path_or_raise(mount_path)
        if mount_path in self._mounts:
            raise RenderError(f"Mount path [{mount_path}] already used for another volume mount")
        kind = config.get("type", "")
        if not kind:
            raise RenderError("Expected [type] to be set for volume mounts.")
        if kind == "host_path":
            cfg = config.get("host_path_config")
            if cfg is None:
                raise RenderError("Expected [host_path_config] to be set for [host_path] type.")
            if cfg.get("acl_enable", False):
                raise RenderError("ACLs are not supported by this renderer")
            source = allowed_fs_host_path_or_raise(valid_fs_path_or_raise(cfg.get("path", "")).rstrip("/"))
        elif kind == "ix_volume":
            cfg = config.get("ix_volume_config")
            if cfg is None:
                raise RenderError("Expected [ix_volume_config] to be set for [ix_volume] type.")
            name = cfg.get("dataset_name")
            ix_volumes = render.values.get("ix_volumes", {})
            if not name or name not in ix_volumes:
                raise RenderError(f"Expected the key [{name}] to be set in [ix_volumes] for [ix_volume] type.")
            source = allowed_fs_host_path_or_raise(valid_fs_path_or_raise(ix_volumes[name].rstrip("/")), True)
        else:
            raise RenderError(f"Storage type [{kind}] is not supported by this renderer")
        propagation = valid_choice(
            "Propagation",
            cfg.get("propagation", "rprivate"),
            ("shared", "slave", "private", "rshared", "rslave", "rprivate"),
        )
        self._mounts[mount_path] = {
            "type": "bind",
            "target": mount_path,
            "read_only": config.get("read_only", False),
            "source": source,
            "bind": {"create_host_path": cfg.get("create_host_path", False), "propagation": propagation},
        }

    def has_mounts(self):
        return bool(self._mounts)

    def render(self):
        return [self._mounts[k] for k in sorted(self._mounts)]


class Restart:
    def __init__(self):
        self._policy = "unless-stopped"
        self._max = 0

    def set_policy(self, policy, maximum_retry_count=0):
        valid_choice("Restart policy", policy, ("always", "on-failure", "unless-stopped", "no"))
        self._policy, self._max = policy, maximum_retry_count

    def render(self):
        return f"{self._policy}:{self._max}" if self._policy == "on-failure" and self._max > 0 else self._policy


class Container:
    def __init__(self, render, name, image):
        self._render = render
        self._name = name
        images = render.values["images"]
        if image not in images:
            raise RenderError(f"Image [{image}] not found in values. Available images: [{', '.join(images.keys())}]")
        repo, tag = images[image].get("repository", ""), images[image].get("tag", "")
        if not repo:
            raise RenderError(f"Repository not found for image [{image}]")
        if not tag:
            raise RenderError(f"Tag not found for image [{image}]")
        self._image = f"{repo}:{tag}"
        self._user = ""
        self._cap_drop = {"ALL"}
        self._cap_add = set()
        self._security_opt = {"no-new-privileges": "no-new-privileges=true"}
        self._privileged = False
        self._group_add = {568}
        self._network_mode = ""
        self._entrypoint = []
        self._command = []
        self._grace_period = None
        self._storage = Storage()
        self._ports = Ports()
        self._expose = set()
        self.healthcheck = Healthcheck()
        self.restart = Restart()
        self.deploy = Resources(render.values)
        self.environment = Environment(render.values)
        self._labels = {}
        if render.values.get("network", {}).get("host_network", False):
            self.set_network_mode("host")
        for label in render.values.get("labels", []):
            containers = label.get("containers", [])
            if not containers:
                raise RenderError(f'Label [{label.get("key", "")}] must have at least one container')
            if name in containers:
                key = label["key"]
                if not key or key.startswith("com.docker.compose"):
                    raise RenderError(f"Label [{key}] is not valid")
                if key in self._labels:
                    raise RenderError(f"Label [{key}] already added")
                self._labels[key] = escape_dollar(str(label["value"]))

    def name(self):
        return self._name

    def set_user(self, user, group):
        for i in (user, group):
            if not isinstance(i, int) or isinstance(i, bool) or i < 0:
                raise RenderError(f"User/Group [{i}] is not valid")
        self._user = f"{user}:{group}"

    def add_group(self, group):
        if group in self._group_add:
            raise RenderError(f"Group [{group}] already added")
        self._group_add.add(group)

    def set_grace_period(self, seconds):
        if seconds < 0:
            raise RenderError(f"Grace period [{seconds}] cannot be negative")
        self._grace_period = seconds

    def set_network_mode(self, mode):
        if mode not in ("host", "none") and not mode.startswith("service:"):
            raise RenderError(f"Invalid network mode [{mode}]")
        self._network_mode = mode

    def set_entrypoint(self, entrypoint):
        self._entrypoint = [escape_dollar(str(e)) for e in entrypoint]

    def set_command(self, command):
        self._command = [escape_dollar(str(e)) for e in command]

    def add_caps(self, caps):
        for c in caps:
            if c in self._cap_add:
                raise RenderError(f"Capability [{c}] already added")
            self._cap_add.add(c)

    def add_port(self, port_config=None, dev_config=None):
        config = (port_config or {}) | (dev_config or {})
        bind_mode = valid_choice("Port status", config.get("bind_mode", ""), ("published", "exposed", ""))
        if not bind_mode:
            return
        mode = valid_choice("Port Mode", config.get("mode", "ingress"), ("ingress", "host"))
        host_port = config.get("port_number", 0)
        container_port = config.get("container_port", 0) or host_port
        protocol = config.get("protocol", "tcp")
        host_ips = config.get("host_ips") or ["0.0.0.0", "::"]
        if not isinstance(host_ips, list):
            raise RenderError(f"Expected [host_ips] to be a list, got [{host_ips}]")
        if bind_mode == "published":
            for ip in host_ips:
                self._ports.add(host_port, container_port, protocol, ip, mode)
        else:
            key = f"{valid_port_or_raise(container_port)}/{protocol}"
            if key in self._expose:
                raise RenderError(f"Exposed port [{key}] already added")
            self._expose.add(key)

    def add_storage(self, mount_path, config):
        self._storage.add(self._render, mount_path, config)

    def render(self):
        out = {
            "image": self._image,
            "platform": "linux/amd64",
            "tty": False,
            "stdin_open": False,
            "restart": self.restart.render(),
            "healthcheck": self.healthcheck.render(),
        }
        if self._grace_period is not None:
            out["stop_grace_period"] = f"{self._grace_period}s"
        if self._user:
            out["user"] = self._user
        if self._group_add:
            out["group_add"] = sorted(self._group_add, key=lambda g: (isinstance(g, str), g))
        out["privileged"] = self._privileged
        if self._cap_drop:
            out["cap_drop"] = sorted(self._cap_drop)
        if self._cap_add:
            out["cap_add"] = sorted(self._cap_add)
        if self._security_opt:
            out["security_opt"] = [self._security_opt[k] for k in sorted(self._security_opt)]
        if self._network_mode:
            out["network_mode"] = self._network_mode
        if self._network_mode != "host":
            if self._ports.has_ports():
                out["ports"] = self._ports.render()
            if self._expose:
                out["expose"] = sorted(self._expose)
        if self._entrypoint:
            out["entrypoint"] = self._entrypoint
        if self._command:
            out["command"] = self._command
        out["deploy"] = self.deploy.render()
        out["environment"] = self.environment.render()
        if self._labels:
            out["labels"] = dict(sorted(self._labels.items()))
        if self._storage.has_mounts():
            out["volumes"] = self._storage.render()
        return out


# ---------------------------------------------------------------------------------------------
# notes and portals


class Notes:
    def __init__(self, render):
        self._render = render
        meta = render.values.get("ix_context", {}).get("app_metadata", {})
        self._app_name = meta.get("title", "") or "<app_name>"
        self._info, self._warnings, self._deprecations = [], [], []
        self._body = ""

    def add_info(self, text):
        self._info.append(text)

    def add_warning(self, text):
        self._warnings.append(text)

    def add_deprecation(self, text):
        self._deprecations.append(text)

    def has_warnings(self):
        return bool(self._warnings)

    def has_deprecations(self):
        return bool(self._deprecations)

    def set_body(self, body):
        self._body = body

    def _security(self, c):
        items = []
        if c._grace_period and c._grace_period > 60:
            self._warnings.append(
                f"Container [{c._name}] has a grace period of [{c._grace_period}] seconds. "
                "TrueNAS waits a maximum of 60 seconds for docker engine to stop during system reboot/shutdown. "
                "If the container needs the full configured grace period, manually stop it before reboot/shutdown "
                "to ensure the full wait time is honored."
            )
        user, group = c._user.split(":") if c._user else ("unknown", "unknown")
        groups = {0: "root", 20: "dialout", 24: "cdrom", 29: "audio", 568: "apps", 999: "docker"}
        run_as = [
            f"User: {'root' if user == '0' else user}",
            f"Group: {'root' if group == '0' else group}",
            "Supplementary Groups: " + ", ".join(sorted(groups.get(g, str(g)) for g in c._group_add)),
        ]
        items.append(("Running user/group(s)", run_as))
        return items

    def render(self):
        security = {name: self._security(c) for name, c in sorted(self._render._containers.items())}
        out = f"# {self._app_name}" + (" ⚠️" if self._warnings or self._deprecations else "") + "\n\n"
        for title, entries in (("Warnings ⚠️", self._warnings), ("Deprecations ⚠️", self._deprecations), ("Info", self._info)):
            if entries:
                out += f"## {title}\n\n" + "".join(f"- {e}\n" for e in entries) + "\n"
        if security:
            out += "## Security\n\n**Read the following security precautions to ensure that you wish to continue using this application.**\n\n"
            for name, sections in security.items():
                out += f"---\n\n### Container: [{name}]\n\n"
                for header, entries in sections:
                    out += f"#### {header}\n\n" + "".join(f"- {e}\n" for e in entries) + "\n"
            out += "---\n\n"
        if self._body:
            out += self._body.strip() + "\n\n"
        out += "## Bug Reports and Feature Requests\n\n"
        out += "If you find a bug in this app or have an idea for a new feature, please file an issue at\n"
        out += "https://github.com/truenas/apps\n"
        return out


class Portals:
    def __init__(self):
        self._portals = {}

    def add(self, port, config=None):
        config = copy.deepcopy(dict(config or {}))
        port = copy.deepcopy(dict(port or {}))
        if port.get("bind_mode", "") != "published":
            return
        name = config.get("name", "Web UI")
        if name in self._portals:
            raise RenderError(f"Portal [{name}] already added")
        host_ips = [ip for ip in port.get("host_ips", []) or [] if ip not in ("::", "0.0.0.0")]
        host = config.get("host") or (host_ips[0] if host_ips else None) or "0.0.0.0"
        scheme = valid_choice("Portal Scheme", config.get("scheme", "http"), ("http", "https"))
        self._portals[name] = {
            "name": name,
            "scheme": scheme,
            "host": host,
            "port": valid_port_or_raise(config.get("port") or port.get("port_number", 0)),
            "path": _valid_path_or_raise(config.get("path", "/")),
        }

    def render(self):
        return [self._portals[k] for k in sorted(self._portals)]


class Functions:
    def fail(self, message):
        raise RenderError(message)


class Render:
    def __init__(self, values):
        self.values = values
        self._original = json.dumps(values, sort_keys=True, default=str)
        self._containers = {}
        self.notes = Notes(self)
        self.portals = Portals()
        self.funcs = Functions()

    def container_names(self):
        return list(self._containers)

    def add_container(self, name, image):
        name = name.strip()
        if not name:
            raise RenderError("Container name cannot be empty")
        if name in self._containers:
            raise RenderError(f"Container {name} already exists.")
        c = Container(self, name, image)
        self._containers[name] = c
        return c

    def render(self):
        if json.dumps(self.values, sort_keys=True, default=str) != self._original:
            raise RenderError("Values have been modified since the renderer was created.")
        if not self._containers:
            raise RenderError("No containers added.")
        services = {n: c.render() for n, c in self._containers.items()}
        notes = self.notes.render()
        return {
            "x-notes": notes,
            "x-portals": self.portals.render(),
            "x-action-required": self.notes.has_warnings() or self.notes.has_deprecations(),
            "services": services,
        }
