"""The server image: server/Dockerfile built into a private ECR repository, or a given reference."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pulumi
import pulumi_aws as aws
import pulumi_docker_build as docker_build

from ...config import ImageConfig
from ._common import tags

#: The build context exactly as .dockerignore admits it (a test holds the two together), plus the
#: Dockerfile. The tag is their hash, the ECR repository refuses overwrites (IMMUTABLE), and
#: docker-build rebuilds whenever its own context hash changes: a file the image contains but the
#: tag ignored (README.md, a regenerated *.egg-info) would push a new image under an existing tag.
IMAGE_INPUTS = ("server/Dockerfile", "server/requirements.txt", "pyproject.toml", "README.md", "src")
#: Left out of the context by .dockerignore, so out of the tag too.
CONTEXT_EXCLUDES = ("__pycache__", "*.egg-info")


def _in_context(root: Path, path: Path) -> bool:
    parts = path.relative_to(root).parts
    return path.is_file() and not any(part == "__pycache__" or part.endswith(".egg-info") for part in parts)


def content_tag(root: Path) -> str:
    digest = hashlib.sha256()
    for entry in IMAGE_INPUTS:
        path = root / entry
        files = sorted(p for p in path.rglob("*") if _in_context(root, p)) if path.is_dir() else [path]
        for file in files:
            digest.update(str(file.relative_to(root)).encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


class ServerImage(pulumi.ComponentResource):
    ref: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        config: ImageConfig,
        environment: str,
        *,
        project_root: Path,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("mlflow-platform:aws:ServerImage", name, None, opts)
        if config.reference:
            self.ref = pulumi.Output.from_input(config.reference)
        else:
            child = pulumi.ResourceOptions(parent=self)
            repo = aws.ecr.Repository(
                f"{name}-repo",
                name=f"mlflow-platform/{environment}/server",
                image_tag_mutability="IMMUTABLE",
                image_scanning_configuration={"scan_on_push": True},
                encryption_configurations=[{"encryption_type": "KMS"}],
                force_delete=False,
                tags=tags(environment, "image"),
                opts=child,
            )
            aws.ecr.LifecyclePolicy(
                f"{name}-repo-lifecycle",
                repository=repo.name,
                policy=(
                    '{"rules":[{"rulePriority":1,"description":"keep the last 20 images",'
                    '"selection":{"tagStatus":"any","countType":"imageCountMoreThan","countNumber":20},'
                    '"action":{"type":"expire"}}]}'
                ),
                opts=child,
            )
            token = aws.ecr.get_authorization_token_output(
                registry_id=repo.registry_id, opts=pulumi.InvokeOptions(parent=self)
            )
            image = docker_build.Image(
                f"{name}-build",
                context={"location": str(project_root)},
                dockerfile={"location": str(project_root / "server" / "Dockerfile")},
                platforms=["linux/amd64"],
                push=True,
                tags=[pulumi.Output.concat(repo.repository_url, ":", content_tag(project_root))],
                registries=[{"address": repo.repository_url, "username": token.user_name, "password": token.password}],
                opts=child,
            )
            self.ref = image.ref  # repository@sha256:digest — pods run exactly what was built
        self.register_outputs({"ref": self.ref})
