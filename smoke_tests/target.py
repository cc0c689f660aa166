"""Where the smoke suite points: one tracking server and the credentials for it."""

from dataclasses import dataclass

import requests


@dataclass(frozen=True)
class Target:
    uri: str
    username: str
    password: str
    verify: str | bool
    session_id: str

    def http(self, *, auth: bool = True) -> requests.Session:
        session = requests.Session()
        session.verify = self.verify
        if auth:
            session.auth = (self.username, self.password)
        return session

    def url(self, path: str) -> str:
        return f"{self.uri.rstrip('/')}/{path.lstrip('/')}"
