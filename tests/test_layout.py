"""The package layout does not shadow the standard library."""

from __future__ import annotations

import mailbox
import sysconfig
from pathlib import Path


def test_import_mailbox_gives_the_standard_library() -> None:
    stdlib = Path(sysconfig.get_paths()["stdlib"]).resolve()
    assert Path(mailbox.__file__).resolve().parent == stdlib
    assert hasattr(mailbox, "Maildir")


def test_troupe_mailbox_is_inside_the_package() -> None:
    import troupe.mailbox

    assert Path(troupe.mailbox.__file__).parent.parent.name == "troupe"
