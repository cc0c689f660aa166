"""The DynamoDB table `mlflow-platform promote --lock dynamodb://<table>` serialises promotions on."""

from __future__ import annotations

import pulumi
import pulumi_aws as aws

from ._common import tags


class PromotionLock(pulumi.ComponentResource):
    table_name: pulumi.Output[str]
    table_arn: pulumi.Output[str]

    def __init__(self, name: str, environment: str, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlflow-platform:aws:PromotionLock", name, None, opts)
        table = aws.dynamodb.Table(
            f"{name}-table",
            name=f"mlflow-{environment}-promotion-locks",
            billing_mode="PAY_PER_REQUEST",
            hash_key="lock_key",
            attributes=[{"name": "lock_key", "type": "S"}],
            ttl={"attribute_name": "expires_at", "enabled": True},  # expired locks also vanish on their own
            server_side_encryption={"enabled": True},
            point_in_time_recovery={"enabled": True},
            tags=tags(environment, "promotion-lock"),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.table_name = table.name
        self.table_arn = table.arn
        self.register_outputs({"tableName": self.table_name, "tableArn": self.table_arn})
