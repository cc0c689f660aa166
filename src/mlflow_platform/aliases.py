"""The registry aliases the platform's promotion flow uses: the runbooks set them (promote,
rollback), the restore drill checks that ``@champion`` resolves in a restored database as in the
source. One definition, so the two never disagree on a name."""

from __future__ import annotations

CHAMPION, CHALLENGER, PREVIOUS, ROLLED_BACK = "champion", "challenger", "previous-champion", "rolled-back"
