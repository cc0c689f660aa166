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


@dataclass
class Capture:
    resources: list[Resource] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)

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


def _mock_state(typ: str, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Realistic outputs for the resource types the program creates."""
    rid = f"{name}-{_short_id(name)[:8]}"
    out = dict(inputs)
    service = typ.split(":")[1].split("/")[0] if typ.startswith("aws:") else ""
    if typ == "aws:ec2/vpc:Vpc":
        rid = f"vpc-{_short_id(name)}"
    elif typ == "aws:ec2/subnet:Subnet":
        rid = f"subnet-{_short_id(name)}"
    elif typ == "aws:ec2/securityGroup:SecurityGroup":
        rid = f"sg-{_short_id(name)}"
    elif typ == "aws:s3/bucket:Bucket":
        rid = inputs.get("bucket") or name
        out.update(bucket=rid, arn=f"arn:aws:s3:::{rid}", bucketRegionalDomainName=f"{rid}.s3.{REGION}.amazonaws.com")
    elif typ == "aws:kms/key:Key":
        rid = f"{_short_id(name)}-0000-4000-8000-{_short_id(name + 'k')[:12]}"
        out.update(keyId=rid, arn=_arn("kms", f"key/{rid}"))
    elif typ == "aws:rds/instance:Instance":
        rid = inputs.get("identifier", name)
        host = f"{rid}.c{_short_id(name)[:10]}.{REGION}.rds.amazonaws.com"
        out.update(
            address=host,
            endpoint=f"{host}:5432",
            port=5432,
            arn=_arn("rds", f"db:{rid}"),
            resourceId=f"db-{_short_id(name).upper()}",
        )
    elif typ == "aws:lb/loadBalancer:LoadBalancer":
        suffix = f"app/{inputs.get('name', name)}/{_short_id(name)[:16]}"
        out.update(
            arn=_arn("elasticloadbalancing", f"loadbalancer/{suffix}"),
            arnSuffix=suffix,
            dnsName=f"{inputs.get('name', name)}-{_short_id(name)[:10]}.{REGION}.elb.amazonaws.com",
            zoneId="Z32O12XQLNTSW2",
        )
    elif typ == "aws:lb/targetGroup:TargetGroup":
        suffix = f"targetgroup/{inputs.get('name', name)}/{_short_id(name)[:16]}"
        out.update(arn=_arn("elasticloadbalancing", suffix), arnSuffix=suffix)
    elif typ == "aws:acm/certificate:Certificate":
        domain = inputs.get("domainName", "example.com")
        out.update(
            arn=_arn("acm", f"certificate/{_short_id(name)}"),
            domainValidationOptions=[
                {
                    "domainName": domain,
                    "resourceRecordName": f"_x1.{domain}.",
                    "resourceRecordType": "CNAME",
                    "resourceRecordValue": "_x2.acm-validations.aws.",
                }
            ],
        )
    elif typ == "aws:eks/cluster:Cluster":
        issuer = f"https://oidc.eks.{REGION}.amazonaws.com/id/{_short_id(name).upper()}"
        out.update(
            arn=_arn("eks", f"cluster/{inputs.get('name', name)}"),
            endpoint=f"https://{_short_id(name)}.eks.amazonaws.com",
            certificateAuthority={"data": "LS0tLS1CRUdJTi0tLS0t"},
            identities=[{"oidcs": [{"issuer": issuer}]}],
            vpcConfig={**inputs.get("vpcConfig", {}), "clusterSecurityGroupId": f"sg-{_short_id(name + 'c')}"},
        )
    elif typ == "aws:ecr/repository:Repository":
        out.update(
            repositoryUrl=f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/{inputs.get('name', name)}",
            arn=_arn("ecr", f"repository/{inputs.get('name', name)}"),
        )
    elif typ == "docker-build:index:Image":
        tag = (inputs.get("tags") or [f"{name}:latest"])[0]
        digest = "sha256:" + hashlib.sha256(tag.encode()).hexdigest()
        out.update(digest=digest, ref=f"{tag.rsplit(':', 1)[0]}@{digest}")
    elif typ == "random:index/randomPassword:RandomPassword":
        out.update(result=hashlib.sha256(name.encode()).hexdigest()[: int(inputs.get("length", 32))])
    elif typ.startswith("aws:iam/openIdConnectProvider"):
        out.update(arn=f"arn:aws:iam::{ACCOUNT}:oidc-provider/{inputs.get('url', '').removeprefix('https://')}")
    elif typ.startswith("aws:iam/role:Role"):
        out.update(arn=f"arn:aws:iam::{ACCOUNT}:role/{inputs.get('name', name)}", name=inputs.get("name", name))
    elif typ.startswith("aws:iam/policy:Policy"):
        out.update(arn=f"arn:aws:iam::{ACCOUNT}:policy/{inputs.get('name', name)}")
    elif typ == "aws:dynamodb/table:Table":
        out.update(arn=_arn("dynamodb", f"table/{inputs.get('name', name)}"))
    elif typ == "aws:sns/topic:Topic":
        out.update(arn=_arn("sns", inputs.get("name", name)))
    elif typ == "aws:secretsmanager/secret:Secret":
        out.update(arn=_arn("secretsmanager", f"secret:{inputs.get('name', name)}-AbCdEf"))
    elif typ == "aws:cloudwatch/dashboard:Dashboard":
        out.update(dashboardArn=f"arn:aws:cloudwatch::{ACCOUNT}:dashboard/{inputs.get('dashboardName', name)}")
    elif service and "arn" not in out:
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
        return [_mask(r, p) for r, p in zip(raw, plain)]
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


def run(stack_file: Path, *, project_root: Path, overrides: dict[str, Any] | None = None) -> Capture:
    """Run ``infra/program.py:main()`` for one stack file under mocks and capture everything."""
    import pulumi
    from pulumi.runtime import settings

    capture = Capture()

    class Mocks(pulumi.runtime.Mocks):
        def new_resource(self, args: pulumi.runtime.MockResourceArgs):
            inputs = _unwrap(args.inputs)
            rid, state = _mock_state(args.typ, args.name, inputs)
            capture.resources.append(Resource(args.typ, args.name, inputs, display=_mask(args.inputs, inputs)))
            return [rid, state]

        def call(self, args: pulumi.runtime.MockCallArgs):
            return _call(args.token, _unwrap(args.args))

    class Monitor(pulumi.runtime.mocks.MockMonitor):
        """Records each resource's URN and parent, which the mocks API does not pass on."""

        def RegisterResource(self, request):
            response = super().RegisterResource(request)
            parent = request.parent or ""
            parent_type = parent.split("::")[-2] if parent.count("::") >= 3 else ""
            links[(request.type, request.name)] = (
                response.urn,
                None if parent_type.endswith("pulumi:pulumi:Stack") else parent.rsplit("::", 1)[-1] or None,
                {key: list(deps.urns) for key, deps in request.propertyDependencies.items() if deps.urns},
            )
            return response

    links: dict[tuple[str, str], tuple[str, str | None, dict[str, list[str]]]] = {}

    stack = stack_file.name.split(".")[1] if stack_file.name.startswith("Pulumi.") else stack_file.stem
    values, secret_keys = stack_config_values(stack_file, overrides)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    settings.ROOT.set(None)
    pulumi.runtime.set_all_config(values, secret_keys=secret_keys)
    mocks = Mocks()
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack, preview=False, monitor=Monitor(mocks))

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
    for resource in capture.resources:
        resource.urn, resource.parent, resource.property_dependencies = links.get(
            (resource.type, resource.name), ("", None, {})
        )
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
