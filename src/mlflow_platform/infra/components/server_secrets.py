"""The server's own secrets: the Flask session key (one for every replica) and the admin
password, generated unless the stack supplies one, the admin credentials kept in Secrets Manager
for the post-deploy smoke tests. None of it is ever a stack output."""

from __future__ import annotations

import pulumi
import pulumi_aws as aws
import pulumi_random as random

from ._common import tags


class ServerSecrets(pulumi.ComponentResource):
    flask_secret_key: pulumi.Output[str]
    admin_password: pulumi.Output[str]
    admin_secret_arn: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        environment: str,
        *,
        admin_username: str,
        admin_password: str | None,
        recovery_window_days: int = 7,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("mlflow-platform:aws:ServerSecrets", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.flask_secret_key = pulumi.Output.secret(
            random.RandomPassword(f"{name}-flask-key", length=64, special=False, opts=child).result
        )
        self.admin_password = pulumi.Output.secret(
            admin_password
            if admin_password is not None
            else random.RandomPassword(f"{name}-admin-password", length=32, special=False, opts=child).result
        )
        secret = aws.secretsmanager.Secret(
            f"{name}-admin",
            name=f"mlflow/{environment}/admin",
            recovery_window_in_days=recovery_window_days,
            tags=tags(environment, "server"),
            opts=child,
        )
        aws.secretsmanager.SecretVersion(
            f"{name}-admin",
            secret_id=secret.id,
            secret_string=pulumi.Output.json_dumps({"username": admin_username, "password": self.admin_password}),
            opts=child,
        )
        self.admin_secret_arn = secret.arn
        self.register_outputs({"adminSecretArn": self.admin_secret_arn})
