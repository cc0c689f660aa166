"""The policy pack: `pulumi preview --policy-pack policies --policy-pack-config policies/config/<stack>.json`.

Only this file builds the PolicyPack (which starts the analyzer server and blocks); the rules live
in the package (`mlflow_platform.policies`), importable by tests and by `mlflow-platform plan`.
"""

from pulumi_policy import EnforcementLevel, PolicyPack

from mlflow_platform.policies import PACK_NAME, POLICIES

PolicyPack(name=PACK_NAME, enforcement_level=EnforcementLevel.MANDATORY, policies=POLICIES)
