"""Job folders removed in the background: all of them by a clean stop, in order."""

from pathlib import Path

from bcmanager.janitor import Janitor
from bcmanager.layout import remove_tree


def test_every_folder_handed_over_is_gone_once_the_janitor_stops(tmp_path: Path) -> None:
    folders = []
    for i in range(50):
        folder = tmp_path / f"ASSIGNED_{i}_e1"
        folder.mkdir()
        (folder / "a.pod5").symlink_to(tmp_path / "nowhere.pod5")
        folders.append(folder)
    janitor = Janitor(remove_tree)
    for folder in folders:
        janitor.remove(folder)
    janitor.close()
    assert not list(tmp_path.iterdir())


def test_a_failing_removal_is_logged_and_the_rest_still_go(tmp_path: Path, caplog) -> None:
    gone: list[Path] = []

    def remove(path: Path) -> None:
        if path.name == "bad":
            raise PermissionError("read-only")
        gone.append(path)

    janitor = Janitor(remove)
    for name in ("a", "bad", "b"):
        janitor.remove(tmp_path / name)
    janitor.close()
    assert [p.name for p in gone] == ["a", "b"]
    assert "dropped at the next start" in caplog.text
