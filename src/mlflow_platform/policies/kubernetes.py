"""Kubernetes workloads: hardened, sized, probed, replicated in production, not exposed directly."""

from __future__ import annotations

import ipaddress
import re

from pulumi_policy import (
    EnforcementLevel,
    PolicyConfigSchema,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

from ._helpers import WORKLOAD_KINDS, as_list, containers, of_type, pod_spec

SECRET_NAME = re.compile(r"(PASSWORD|SECRET|TOKEN|CREDENTIAL|PRIVATE_KEY|ACCESS_KEY)", re.IGNORECASE)
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
#: Wider than a /20 is a VPC, not a load balancer's subnets.
MIN_INGRESS_PREFIX = 20


def _hardened(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type not in WORKLOAD_KINDS:
        return
    pod = pod_spec(args.props, args.resource_type)
    pod_security = pod.get("securityContext") or {}
    for container in containers(args.props, args.resource_type):
        security = container.get("securityContext") or {}
        name = container.get("name")
        if not (security.get("runAsNonRoot") or pod_security.get("runAsNonRoot")):
            report(f"container {name} may run as root (runAsNonRoot)")
        if security.get("readOnlyRootFilesystem") is not True:
            report(f"container {name} has a writable root filesystem (readOnlyRootFilesystem)")
        if security.get("allowPrivilegeEscalation") is not False:
            report(f"container {name} allows privilege escalation (allowPrivilegeEscalation)")


def _resources(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type not in WORKLOAD_KINDS:
        return
    for container in containers(args.props, args.resource_type):
        resources = container.get("resources") or {}
        requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
        missing = [f"requests.{k}" for k in ("cpu", "memory") if k not in requests] + [
            f"limits.{k}" for k in ("memory",) if k not in limits
        ]
        if missing:
            report(f"container {container.get('name')} sets no {', '.join(missing)}")


def _probes(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != DEPLOYMENT:
        return
    for container in containers(args.props, args.resource_type):
        missing = [p for p in ("readinessProbe", "livenessProbe") if not container.get(p)]
        if missing:
            report(f"container {container.get('name')} has no {' or '.join(missing)}")


def _production_replicas(args: StackValidationArgs, report: ReportViolation) -> None:
    config = args.get_config()
    if not config.get("production"):
        return
    minimum = int(config.get("minimumReplicas", 2))
    budgets = of_type(args, "kubernetes:policy/v1:PodDisruptionBudget")
    floors = _hpa_targets(args, "minReplicas")
    for deployment in of_type(args, DEPLOYMENT):
        labels = ((deployment.props.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        if ((deployment.props.get("spec") or {}).get("template") or {}).get("metadata", {}).get("labels", {}).get(
            "app.kubernetes.io/component"
        ) == "jobs":
            continue  # the single job-runner replica is one by design
        name = (deployment.props.get("metadata") or {}).get("name", deployment.name)
        replicas = floors.get(name) or int((deployment.props.get("spec") or {}).get("replicas") or 1)
        if replicas < minimum:
            report(
                f"deployment {deployment.name} runs {replicas} replica(s); production needs {minimum}", deployment.urn
            )
        covered = any(
            all(
                labels.get(k) == v
                for k, v in (((pdb.props.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}).items()
            )
            and (pdb.props.get("spec") or {}).get("minAvailable", 0) not in (0, "0")
            for pdb in budgets
        )
        if not covered:
            report(f"deployment {deployment.name} has no PodDisruptionBudget keeping a replica up", deployment.urn)


def _hpa_targets(args: StackValidationArgs, key: str) -> dict[str, int]:
    """Deployment name -> the HPA's ``key`` (minReplicas, maxReplicas) for each autoscaled one."""
    found = {}
    for hpa in of_type(args, "kubernetes:autoscaling/v2:HorizontalPodAutoscaler"):
        spec = hpa.props.get("spec") or {}
        if (spec.get("scaleTargetRef") or {}).get("kind") == "Deployment":
            found[spec["scaleTargetRef"].get("name")] = int(spec.get(key) or 1)
    return found


def _hpa_owns_replicas(args: StackValidationArgs, report: ReportViolation) -> None:
    autoscaled = _hpa_targets(args, "minReplicas")
    for deployment in of_type(args, DEPLOYMENT):
        name = (deployment.props.get("metadata") or {}).get("name", deployment.name)
        if name in autoscaled and "replicas" in (deployment.props.get("spec") or {}):
            report(
                f"deployment {name} sets spec.replicas while a HorizontalPodAutoscaler scales it: every update "
                "resets the replica count, even under load",
                deployment.urn,
            )


def _narrow_ingress(args: ResourceValidationArgs, report: ReportViolation) -> None:
    """Every ingress peer is a pod selector or a subnet-sized block: never 'anyone' or the VPC."""
    if args.resource_type != "kubernetes:networking.k8s.io/v1:NetworkPolicy":
        return
    for rule in as_list((args.props.get("spec") or {}).get("ingress")):
        peers = as_list(rule.get("from"))
        if not peers:
            report("an ingress rule without 'from' admits every source")
        for peer in peers:
            cidr = (peer.get("ipBlock") or {}).get("cidr")
            if cidr and ipaddress.ip_network(cidr, strict=False).prefixlen < MIN_INGRESS_PREFIX:
                report(f"ingress from {cidr} admits a whole network; name the load balancer's subnets")


def _no_load_balancer_service(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if (
        args.resource_type == "kubernetes:core/v1:Service"
        and (args.props.get("spec") or {}).get("type") == "LoadBalancer"
    ):
        report("Service of type LoadBalancer creates an unmanaged load balancer; use the ALB + TargetGroupBinding")


def _no_inline_secrets(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type not in WORKLOAD_KINDS:
        return
    for container in containers(args.props, args.resource_type):
        for env in as_list(container.get("env")):
            if SECRET_NAME.search(env.get("name", "")) and "value" in env and "valueFrom" not in env:
                report(
                    f"container {container.get('name')} has {env['name']} inline; "
                    "reference a Secret (valueFrom.secretKeyRef)"
                )


def _cronjobs_safe(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != "kubernetes:batch/v1:CronJob":
        return
    spec = args.props.get("spec") or {}
    if spec.get("concurrencyPolicy") != "Forbid":
        report(f"concurrencyPolicy is {spec.get('concurrencyPolicy', 'Allow')!r}: two runs of a runbook may overlap")
    for key in ("successfulJobsHistoryLimit", "failedJobsHistoryLimit"):
        if key not in spec or int(spec[key]) > 10:
            report(f"{key} is {spec.get(key, 'unset')}: keep a short history (at most 10)")
    if not spec.get("startingDeadlineSeconds"):
        report("startingDeadlineSeconds is unset: a long-missed schedule would start a burst of catch-up runs")


def _runbooks_scheduled(args: StackValidationArgs, report: ReportViolation) -> None:
    if not args.get_config().get("required", True):
        return
    commands = [
        " ".join(as_list(c.get("command")))
        for r in of_type(args, "kubernetes:batch/v1:CronJob")
        for c in containers(r.props, r.resource_type)
    ]
    for runbook in ("reap-stuck-runs", "cleanup-runs", "gc"):
        if not any(f"mlflow-platform {runbook}" in command for command in commands):
            report(f"no CronJob runs `mlflow-platform {runbook}`")


POLICIES = [
    ResourceValidationPolicy(
        name="k8s-hardened-containers",
        description="Containers run non-root, read-only, without privilege escalation.",
        validate=_hardened,
        enforcement_level=EnforcementLevel.MANDATORY,
        remediation_steps="Set runAsNonRoot, readOnlyRootFilesystem: true, allowPrivilegeEscalation: false; "
        "mount emptyDir where the process writes.",
    ),
    ResourceValidationPolicy(
        name="k8s-resources-set",
        description="Containers request CPU and memory and limit memory.",
        validate=_resources,
        enforcement_level=EnforcementLevel.MANDATORY,
        remediation_steps="Set resources.requests.cpu/memory and resources.limits.memory (server.* in the stack).",
    ),
    ResourceValidationPolicy(
        name="k8s-probes-set",
        description="Deployments have readiness and liveness probes.",
        validate=_probes,
        enforcement_level=EnforcementLevel.MANDATORY,
        remediation_steps="Add readinessProbe and livenessProbe.",
    ),
    StackValidationPolicy(
        name="k8s-production-replicas",
        description="Production runs at least 2 replicas behind a PodDisruptionBudget.",
        validate=_production_replicas,
        enforcement_level=EnforcementLevel.MANDATORY,
        config_schema=PolicyConfigSchema(
            properties={
                "production": {"type": "boolean", "default": False},
                "minimumReplicas": {"type": "integer", "default": 2},
            }
        ),
        remediation_steps="Set server.replicas (the HPA's minReplicas) >= 2 in the prod stack; keep the PDB.",
    ),
    ResourceValidationPolicy(
        name="k8s-ingress-narrow",
        description="NetworkPolicies admit named pods or the ALB's subnets, never the whole VPC.",
        validate=_narrow_ingress,
        enforcement_level=EnforcementLevel.MANDATORY,
        remediation_steps="Admit the load balancer's subnet CIDRs (alb_subnet_cidrs) or a podSelector.",
    ),
    StackValidationPolicy(
        name="k8s-hpa-owns-replicas",
        description="A Deployment that a HorizontalPodAutoscaler scales does not set spec.replicas.",
        validate=_hpa_owns_replicas,
        enforcement_level=EnforcementLevel.MANDATORY,
        # Kubernetes docs, HorizontalPodAutoscaler: "When an HPA is enabled, it is recommended that the
        # value of spec.replicas of the Deployment ... be removed from their manifest(s)."
        remediation_steps="Leave replicas out of the Deployment; the HPA's minReplicas is the floor.",
    ),
    ResourceValidationPolicy(
        name="k8s-no-loadbalancer-service",
        description="No Service of type LoadBalancer.",
        validate=_no_load_balancer_service,
        enforcement_level=EnforcementLevel.MANDATORY,
        remediation_steps="Use a ClusterIP Service bound to the ALB target group.",
    ),
    ResourceValidationPolicy(
        name="k8s-cronjobs-safe",
        description="CronJobs never overlap, keep a short history and cap catch-up.",
        validate=_cronjobs_safe,
        enforcement_level=EnforcementLevel.MANDATORY,
        remediation_steps="Set concurrencyPolicy: Forbid, history limits <= 10 and startingDeadlineSeconds.",
    ),
    StackValidationPolicy(
        name="mlflow-runbooks-scheduled",
        description="reap-stuck-runs, cleanup-runs and gc run on a schedule.",
        validate=_runbooks_scheduled,
        enforcement_level=EnforcementLevel.MANDATORY,
        config_schema=PolicyConfigSchema(properties={"required": {"type": "boolean", "default": True}}),
        remediation_steps="Keep runbooks.enabled: true in the stack (or set this rule's `required: false`).",
    ),
    ResourceValidationPolicy(
        name="k8s-no-inline-secrets",
        description="No secret value is inlined in a container's environment.",
        validate=_no_inline_secrets,
        enforcement_level=EnforcementLevel.MANDATORY,
        remediation_steps="Put the value in a Secret and use env.valueFrom.secretKeyRef.",
    ),
]
