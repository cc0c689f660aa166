"""Run the Pulumi program in-process under Pulumi's mocks: an offline `pulumi preview`.

No CLI, no provider plugins, no cloud. The mocks answer like AWS would (ARNs, DNS names, caller
identity, AZs, an EKS cluster), and every resource the program registers is captured with the
inputs the engine would send — the same camelCase props a policy pack sees.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import runpy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .config import PROJECT

ACCOUNT = "123456789012"
REGION = "eu-west-1"
SECRET_SIG = "4dabf18193072939515e22adb298388d"  # Pulumi's marker for a secret value


@dataclass
class Resource:
    type: str
    name: str
    #: secrets unwrapped, as a policy pack's analyzer sees them
    inputs: dict[str, Any]
    parent: str | None = None
    urn: str = ""
    #: secrets replaced by "[secret]": what may be printed
    display: dict[str, Any] = field(default_factory=dict)
    #: input name -> URNs of the resources whose outputs feed it (as the engine records them)
    property_dependencies: dict[str, list[str]] = field(default_factory=dict)
    #: URNs this resource waits for: explicit ``depends_on`` plus property dependencies
    dependencies: list[str] = field(default_factory=list)
    #: what the mocks answered (ARNs, ids): what other resources received
    outputs: dict[str, Any] = field(default_factory=dict)
    #: ``custom_timeouts`` as registered (empty strings: the provider's defaults)
    timeouts: dict[str, str] = field(default_factory=dict)
    #: the options that decide replacement in an update: replaceOnChanges, deleteBeforeReplace
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Capture:
    resources: list[Resource] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)

    #: secrets the stack file lacks that the plan stood in for (reported like placeholders)
    stand_ins: list[str] = field(default_factory=list)

    def of_type(self, type_: str) -> list[Resource]:
        return [r for r in self.resources if r.type == type_]

    def one(self, type_: str, name: str | None = None) -> Resource:
        found = [r for r in self.of_type(type_) if name is None or r.name == name]
        if len(found) != 1:
            raise LookupError(f"expected one {type_} {name or ''}, found {[r.name for r in found]}")
        return found[0]


def _arn(service: str, resource: str, region: str = REGION) -> str:
    return f"arn:aws:{service}:{region}:{ACCOUNT}:{resource}"


def _short_id(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:17]


def _named(inputs: dict[str, Any], name: str, key: str = "name") -> str:
    return inputs.get(key, name)


def _rds(name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    rid = inputs.get("identifier", name)
    host = f"{rid}.c{_short_id(name)[:10]}.{REGION}.rds.amazonaws.com"
    return rid, {
        "address": host,
        "endpoint": f"{host}:5432",
        "port": 5432,
        "arn": _arn("rds", f"db:{rid}"),
        "resourceId": f"db-{_short_id(name).upper()}",
    }


def _load_balancer(name: str, inputs: dict[str, Any]) -> tuple[None, dict[str, Any]]:
    suffix = f"app/{_named(inputs, name)}/{_short_id(name)[:16]}"
    return None, {
        "arn": _arn("elasticloadbalancing", f"loadbalancer/{suffix}"),
        "arnSuffix": suffix,
        "dnsName": f"{_named(inputs, name)}-{_short_id(name)[:10]}.{REGION}.elb.amazonaws.com",
        "zoneId": "Z32O12XQLNTSW2",
    }


def _target_group(name: str, inputs: dict[str, Any]) -> tuple[None, dict[str, Any]]:
    suffix = f"targetgroup/{_named(inputs, name)}/{_short_id(name)[:16]}"
    return None, {"arn": _arn("elasticloadbalancing", suffix), "arnSuffix": suffix}


def _certificate(name: str, inputs: dict[str, Any]) -> tuple[None, dict[str, Any]]:
    domain = inputs.get("domainName", "example.com")
    record = {
        "domainName": domain,
        "resourceRecordName": f"_x1.{domain}.",
        "resourceRecordType": "CNAME",
        "resourceRecordValue": "_x2.acm-validations.aws.",
    }
    return None, {"arn": _arn("acm", f"certificate/{_short_id(name)}"), "domainValidationOptions": [record]}


def _eks(name: str, inputs: dict[str, Any]) -> tuple[None, dict[str, Any]]:
    issuer = f"https://oidc.eks.{REGION}.amazonaws.com/id/{_short_id(name).upper()}"
    return None, {
        "arn": _arn("eks", f"cluster/{_named(inputs, name)}"),
        "endpoint": f"https://{_short_id(name)}.eks.amazonaws.com",
        "certificateAuthority": {"data": "LS0tLS1CRUdJTi0tLS0t"},
        "identities": [{"oidcs": [{"issuer": issuer}]}],
        "vpcConfig": {**inputs.get("vpcConfig", {}), "clusterSecurityGroupId": f"sg-{_short_id(name + 'c')}"},
    }


def _image(name: str, inputs: dict[str, Any]) -> tuple[None, dict[str, Any]]:
    tag = (inputs.get("tags") or [f"{name}:latest"])[0]
    digest = "sha256:" + hashlib.sha256(tag.encode()).hexdigest()
    return None, {"digest": digest, "ref": f"{tag.rsplit(':', 1)[0]}@{digest}"}


def _bucket(name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    rid = inputs.get("bucket") or name
    return rid, {
        "bucket": rid,
        "arn": f"arn:aws:s3:::{rid}",
        "bucketRegionalDomainName": f"{rid}.s3.{REGION}.amazonaws.com",
    }


def _kms_key(name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    rid = f"{_short_id(name)}-0000-4000-8000-{_short_id(name + 'k')[:12]}"
    return rid, {"keyId": rid, "arn": _arn("kms", f"key/{rid}")}


#: Realistic outputs per resource type: ``(name, inputs) -> (physical id or None, outputs)``.
_MOCK_OUTPUTS: dict[str, Any] = {
    "aws:ec2/vpc:Vpc": lambda n, i: (f"vpc-{_short_id(n)}", {}),
    "aws:ec2/subnet:Subnet": lambda n, i: (f"subnet-{_short_id(n)}", {}),
    "aws:ec2/securityGroup:SecurityGroup": lambda n, i: (f"sg-{_short_id(n)}", {}),
    "aws:s3/bucket:Bucket": _bucket,
    "aws:kms/key:Key": _kms_key,
    "aws:rds/instance:Instance": _rds,
    "aws:lb/loadBalancer:LoadBalancer": _load_balancer,
    "aws:lb/targetGroup:TargetGroup": _target_group,
    "aws:acm/certificate:Certificate": _certificate,
    "aws:eks/cluster:Cluster": _eks,
    "aws:ecr/repository:Repository": lambda n, i: (
        None,
        {
            "repositoryUrl": f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/{_named(i, n)}",
            "arn": _arn("ecr", f"repository/{_named(i, n)}"),
        },
    ),
    "docker-build:index:Image": _image,
    "random:index/randomId:RandomId": lambda n, i: (
        None,
        {"hex": hashlib.sha256(n.encode()).hexdigest()[: 2 * int(i.get("byteLength", 4))]},
    ),
    "random:index/randomPassword:RandomPassword": lambda n, i: (
        None,
        {"result": hashlib.sha256(n.encode()).hexdigest()[: int(i.get("length", 32))]},
    ),
    "aws:iam/openIdConnectProvider:OpenIdConnectProvider": lambda n, i: (
        None,
        {"arn": f"arn:aws:iam::{ACCOUNT}:oidc-provider/{i.get('url', '').removeprefix('https://')}"},
    ),
    "aws:iam/role:Role": lambda n, i: (
        None,
        {"arn": f"arn:aws:iam::{ACCOUNT}:role/{_named(i, n)}", "name": _named(i, n)},
    ),
    "aws:iam/policy:Policy": lambda n, i: (None, {"arn": f"arn:aws:iam::{ACCOUNT}:policy/{_named(i, n)}"}),
    "aws:dynamodb/table:Table": lambda n, i: (None, {"arn": _arn("dynamodb", f"table/{_named(i, n)}")}),
    "aws:sns/topic:Topic": lambda n, i: (None, {"arn": _arn("sns", _named(i, n))}),
    "aws:secretsmanager/secret:Secret": lambda n, i: (
        None,
        {"arn": _arn("secretsmanager", f"secret:{_named(i, n)}-AbCdEf")},
    ),
    "aws:cloudwatch/metricAlarm:MetricAlarm": lambda n, i: (
        None,
        {"arn": _arn("cloudwatch", f"alarm:{_named(i, n)}")},
    ),
    "aws:cloudwatch/dashboard:Dashboard": lambda n, i: (
        None,
        {"dashboardArn": f"arn:aws:cloudwatch::{ACCOUNT}:dashboard/{_named(i, n, 'dashboardName')}"},
    ),
}


def _mock_state(typ: str, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Realistic outputs for the resource types the program creates."""
    service = typ.split(":")[1].split("/")[0] if typ.startswith("aws:") else ""
    rid, updates = _MOCK_OUTPUTS.get(typ, lambda n, i: (None, {}))(name, inputs)
    rid = rid or f"{name}-{_short_id(name)[:8]}"
    out = {**inputs, **updates}
    if service and "arn" not in out and typ not in _MOCK_OUTPUTS:
        out["arn"] = _arn(service, f"{name}")
    if service:
        out.setdefault("name", rid)  # Pulumi auto-names what the program leaves unnamed
    return rid, out


def _call(token: str, args: dict[str, Any]) -> dict[str, Any]:
    if token == "aws:index/getCallerIdentity:getCallerIdentity":
        return {"accountId": ACCOUNT, "arn": f"arn:aws:iam::{ACCOUNT}:user/ci", "userId": "AIDAEXAMPLE", "id": ACCOUNT}
    if token == "aws:index/getRegion:getRegion":
        return {"name": REGION, "region": REGION, "id": REGION}
    if token == "aws:index/getAvailabilityZones:getAvailabilityZones":
        return {
            "names": [f"{REGION}a", f"{REGION}b", f"{REGION}c"],
            "zoneIds": ["euw1-az1", "euw1-az2", "euw1-az3"],
            "id": REGION,
        }
    if token == "aws:eks/getCluster:getCluster":
        cluster = args.get("name", "cluster")
        return {
            "name": cluster,
            "arn": _arn("eks", f"cluster/{cluster}"),
            "id": cluster,
            "endpoint": f"https://{_short_id(cluster)}.gr7.{REGION}.eks.amazonaws.com",
            "certificateAuthorities": [{"data": "LS0tLS1CRUdJTi0tLS0t"}],
            "identities": [
                {"oidcs": [{"issuer": f"https://oidc.eks.{REGION}.amazonaws.com/id/{_short_id(cluster).upper()}"}]}
            ],
            "vpcConfig": {"clusterSecurityGroupId": f"sg-{_short_id(cluster)}", "vpcId": f"vpc-{_short_id(cluster)}"},
        }
    if token == "aws:ec2/getVpc:getVpc":
        return {"id": args.get("id"), "cidrBlock": "10.30.0.0/16", "arn": _arn("ec2", f"vpc/{args.get('id')}")}
    if token == "aws:ec2/getSubnet:getSubnet":
        third = int(hashlib.sha256(str(args.get("id")).encode()).hexdigest(), 16) % 250
        return {"id": args.get("id"), "cidrBlock": f"10.30.{third}.0/24", "vpcId": "vpc-mock"}
    if token == "aws:ecr/getAuthorizationToken:getAuthorizationToken":
        return {
            "userName": "AWS",
            "password": "mock-ecr-token",
            "proxyEndpoint": f"https://{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com",
            "id": REGION,
        }
    return {}


MASK = "[secret]"


def _mask(raw: Any, plain: Any) -> Any:
    """``plain`` with every value that arrived secret-wrapped in ``raw`` replaced by MASK;
    a secret mapping keeps its keys, so the shape stays valid (a Secret's stringData)."""
    if isinstance(raw, dict):
        if SECRET_SIG in raw:
            if isinstance(plain, dict):
                return {k: MASK for k in plain}
            return MASK
        return {k: _mask(v, plain.get(k) if isinstance(plain, dict) else None) for k, v in raw.items()}
    if isinstance(raw, list):
        plain = plain if isinstance(plain, list) else [None] * len(raw)
        return [_mask(r, p) for r, p in zip(raw, plain, strict=True)]
    return raw


def _unwrap(value: Any) -> Any:
    """Secrets arrive wrapped; pulumi-policy's deserializer unwraps them as the analyzer does."""
    from pulumi_policy.deserialize import deserialize_properties

    return deserialize_properties(value) if isinstance(value, dict) else value


def stack_config_values(stack_file: Path, overrides: dict[str, Any] | None = None) -> tuple[dict[str, str], list[str]]:
    """A stack file as `set_all_config` wants it; `secure:` values become marked placeholders."""
    document = yaml.safe_load(stack_file.read_text()) or {}
    values: dict[str, str] = {}
    secret_keys: list[str] = []
    for key, value in {**(document.get("config") or {}), **(overrides or {})}.items():
        if isinstance(value, dict) and set(value) == {"secure"}:
            values[key] = "placeholder-secret-value"  # only the CLI can decrypt; length passes checks
            secret_keys.append(key)
            continue
        values[key] = value if isinstance(value, str) else json.dumps(value)
    return values, secret_keys


def _missing_secrets(stack_file: Path, overrides: dict[str, Any]) -> list[str]:
    """Secrets `pulumi up` needs that the example file cannot carry (a ciphertext is per stack)."""
    from .config import ConfigError, load_stack_file

    try:
        missing = load_stack_file(stack_file).missing_secrets()
    except ConfigError:
        return []  # the program reports the file's problems itself
    return [key for key in missing if f"{PROJECT}:{key}" not in overrides]


def _registration(request, response) -> tuple:
    """What the engine is told about one resource beyond its inputs: URN, parent, dependencies,
    timeouts and the options an update acts on."""
    parent = request.parent or ""
    top = (parent.split("::")[-2] if parent.count("::") >= 3 else "").endswith("pulumi:pulumi:Stack")
    options = {
        "replaceOnChanges": list(request.replaceOnChanges),
        "deleteBeforeReplace": request.deleteBeforeReplace,
    }
    return (
        response.urn,
        None if top else parent.rsplit("::", 1)[-1] or None,
        {key: list(deps.urns) for key, deps in request.propertyDependencies.items() if deps.urns},
        list(request.dependencies),
        {k: getattr(request.customTimeouts, k) for k in ("create", "update", "delete")},
        options,
    )


def run(stack_file: Path, *, project_root: Path, overrides: dict[str, Any] | None = None) -> Capture:
    """Run ``infra/program.py:main()`` for one stack file under mocks and capture everything."""
    import pulumi
    from pulumi.runtime import settings

    capture = Capture()

    class Mocks(pulumi.runtime.Mocks):
        def new_resource(self, args: pulumi.runtime.MockResourceArgs):
            inputs = _unwrap(args.inputs)
            rid, state = _mock_state(args.typ, args.name, inputs)
            resource = Resource(args.typ, args.name, inputs, display=_mask(args.inputs, inputs), outputs=state)
            capture.resources.append(resource)
            return [rid, state]

        def call(self, args: pulumi.runtime.MockCallArgs):
            return _call(args.token, _unwrap(args.args))

    class Monitor(pulumi.runtime.mocks.MockMonitor):
        """Records each resource's URN and parent, which the mocks API does not pass on."""

        def RegisterResource(self, request):
            response = super().RegisterResource(request)
            links[(request.type, request.name)] = _registration(request, response)
            return response

    links: dict[tuple[str, str], tuple] = {}

    stack = stack_file.name.split(".")[1] if stack_file.name.startswith("Pulumi.") else stack_file.stem
    capture.stand_ins = _missing_secrets(stack_file, overrides or {})
    stand_ins = {f"{PROJECT}:{key}": {"secure": "stand-in"} for key in capture.stand_ins}
    values, secret_keys = stack_config_values(stack_file, {**stand_ins, **(overrides or {})})
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    settings.ROOT.set(None)
    pulumi.runtime.set_all_config(values, secret_keys=secret_keys)
    pulumi.runtime.set_mocks(mocks := Mocks(), project=PROJECT, stack=stack, preview=False, monitor=Monitor(mocks))

    @pulumi.runtime.test  # waits for every registration and apply before returning
    def _run():
        # Through Pulumi's own entry point, exactly as `pulumi up` runs it.
        outputs = runpy.run_path(str(project_root / "infra" / "__main__.py"), run_name="__main__")["outputs"]
        return pulumi.Output.from_input(outputs).apply(capture.outputs.update)

    try:
        _run()
    finally:
        loop.close()
        asyncio.set_event_loop(None)
    for r in capture.resources:
        r.urn, r.parent, r.property_dependencies, r.dependencies, r.timeouts, r.options = links[(r.type, r.name)]
    return capture


def _ints(value: Any) -> Any:
    """The engine hands numbers over as floats; manifests want the integers back."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_ints(v) for v in value]
    return value


def kubernetes_manifests(capture: Capture) -> list[dict[str, Any]]:
    """The Kubernetes objects as they would be applied (secret values masked), for schema checks."""
    manifests = []
    for resource in capture.resources:
        if not resource.type.startswith("kubernetes:") or resource.type.startswith("kubernetes:helm"):
            continue
        if resource.type == "pulumi:providers:kubernetes":
            continue
        body = {k: v for k, v in _ints(resource.display).items() if not k.startswith("__")}
        manifests.append(body)
    return manifests
