"""The benchmarks' full data sets: `python -m bench.data fetch [--from FOLDER | --base-url URL]`.

Fills the folder NEXP_BENCH_DATA_DIR names (default ~/.cache/nexp/data; service/settings.py) with
the 24 Kodak images, the SIREN paper's audio clips and four meshes, each checked against its
SHA-256 before it takes its place (a file that fails is refused, and nothing is written). Files
already there with the right checksum are kept, so a second run downloads nothing.

The sources are public repositories at pinned commits, so the checksums hold: the Kodak images
as the Neural Experts paper's code redistributes them (the copies bench/RESULTS.md was measured
on), the Bach and counting clips from the SIREN repository, the two-speaker clip from Neural
Experts, the meshes from alecjacobson/common-3d-test-models. Licences as published: Kodak free for
unrestricted use; the SIREN and Neural Experts repositories MIT; spot public domain (Keenan
Crane); the Stanford bunny with credit to the Stanford 3D Scanning Repository; fandisk (Hoppe)
and rocker-arm (INRIA) state none. tests/data/README.md has the excerpts the tests keep.

--from FOLDER copies from a local folder laid out as the data folder (a copy made elsewhere);
--base-url URL downloads every file from URL/<path in the data folder> (a mirror).
"""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pooch

from service.settings import get_settings

NEURAL_EXPERTS = ("https://raw.githubusercontent.com/sitzikbs/Neural-Experts/"
                  "5ff5b59184db6cdeb2f7902e18786380c8652ba2/data")
SIREN = "https://raw.githubusercontent.com/vsitzmann/siren/4df34baee3f0f9c8f351630992c1fe1f69114b5f/data"
COMMON_3D = ("https://raw.githubusercontent.com/alecjacobson/common-3d-test-models/"
             "8a4f8642acaf43f9cd7b67858a1502e1055ef202/data")
FETCH_COMMAND = "python -m bench.data fetch"


@dataclass(frozen=True)
class DataFile:
    path: str
    """Where the file lies in the data folder, e.g. images/kodak/kodim19.png."""
    url: str
    sha256: str


def published(folder: str, base_url: str, checksums: dict[str, str]) -> list[DataFile]:
    """The files `checksums` names, from base_url/<name>, into `folder` of the data folder."""
    return [DataFile(f"{folder}/{name}", f"{base_url}/{name}", sha256) for name, sha256 in checksums.items()]


FILES: tuple[DataFile, ...] = (
    *published("images/kodak", f"{NEURAL_EXPERTS}/rgb_img", {
        "kodim01.png": "a56e27cbf5f843c048b6af1d6e090760e9c92fadba88b7dee0205918a37523bd",
        "kodim02.png": "4f4b74a79237e311d72cad958237b5f7088d8bce1c82305ebefe1a70e3022dfd",
        "kodim03.png": "e25ca1ff2f0c0cb5fdfd5f9b0a0bb21ac4c3de3c84a67f35b09a85d3306249db",
        "kodim04.png": "e3b946107c5d3441c022f678d0c3caf1e224d81b1604ba840a4f88e562de61aa",
        "kodim05.png": "10349e963c5c813d327852f82c1795fa4148d69fedffc4c589bee458e3ac3d53",
        "kodim06.png": "363510303b715d4cbc384e1ce227e466b613a09e1b71ae985882bf8e7fbd9b18",
        "kodim07.png": "b77d3f006f42414bb242222e0482e750c0fb9e5ee8d4bed2f6f11c5605fe54a4",
        "kodim08.png": "ba23983c76b4832ee0e8af0592664756841a16779acd69f792e268fb6d13d6e7",
        "kodim09.png": "6a4361c2fc194feb4edaa9f9a4a0620fb9943e460ac7fdf037fb0f6dd6607a7d",
        "kodim10.png": "9dfb70f5867c29ff9ed6313683f19b3d867849e40fbc0c4c54a4a89df341cf23",
        "kodim11.png": "7936814b58b5387fce2e4e2488b4ec830dadd95fa9520f358ddb30990b50f2b6",
        "kodim12.png": "d78c37c2f04f23761ed2367dd77e2db584ddd4c3950833fecf89f199a8126980",
        "kodim13.png": "bc34a3ce58dea09dce1704c997171602de90cb34d0c8503a988b77f473d39b08",
        "kodim14.png": "55a94550ff18f3246c4074fd32b77b0c74447c26b6ad274d564d999c0450ba6e",
        "kodim15.png": "7538cbb80cb9103606c48b806eae57d56c885c7f90b9b3be70a41160f9cbb683",
        "kodim16.png": "a89c7268ccd4718ba424a99fc4643c572cf692ca6eae887185ceb4e9f11d2e54",
        "kodim17.png": "37afcc89fbdcb76d9518e04b2fc011027e2f4cd14b3b2f83cefd721641a47c5b",
        "kodim18.png": "1a9258c365988961d87a0598725b609139c303ad48a5aad6c503c3b1a87849aa",
        "kodim19.png": "b7450b264b1b0a411390d8931b112c27905a992520fc90569dc4b920aa32bbdc",
        "kodim20.png": "3b46c71e3b92a563820ba32936be8330c586c41f938efd94be938386aae4328a",
        "kodim21.png": "ac958597c82073f6bb65129c68f72b651db5b9efd82e11547d07350214bc268b",
        "kodim22.png": "1cee58eb1f2d9c7ebb254d208a03c783ce6cf2c4d8c2cf45e235dd23b4ce1b29",
        "kodim23.png": "e3111a2fd4da24af15d6459ef9eacfe54106b38e27b4a21821b75c3f5d2d5baf",
        "kodim24.png": "1071c68372cc5a01435c2c225a5cf7d4bb803846ec08bb6b3d6721b156d7cb96",
    }),
    *published("audio", SIREN, {
        "gt_bach.wav": "023940a1bcc534349e16ff46f360ffbfffa993842961dbed955c168fd2f38190",
        "gt_counting.wav": "5becf4851addadb660da353e0e6ea6fd653d4d71e5ea1ce1f6973b556ad397ad",
    }),
    *published("audio", f"{NEURAL_EXPERTS}/audio", {
        "gt_twospeakers.wav": "144f397b7d34c8ff25f942c1f0d8a1d9d0fb309d08bda6196a8e130ad956f0c8",
        "gt_twospeakers_segments.json": "f2598ffbf8ad4a9611c90e2b4257b6eb262cf12b8249d27062b967650dea274f",
    }),
    *published("meshes", COMMON_3D, {
        "fandisk.obj": "ea5bab2fbf545b1915f0d9faf6cc61ff8c18e0d8174ad61f8e35de15d8f6e3f8",
        "rocker-arm.obj": "590257e6d01e689354821d807854306c3bfbb02d9cca73404d5a4924f105c287",
        "spot.obj": "0738b5e8608fed74e5e8c7aa8dd0af97b4b74f9f6cbf7aac84cd7e40b2e44a75",
        "stanford-bunny.obj": "1eb35d1e21ce99e5ce911353b6be278990713448dd9e8f5c9387f9de39b32205",
    }),
)

Downloader = Callable[[str, str, object], None]
"""pooch's downloader: (source, temporary output file, the Pooch or None)."""


def data_root() -> Path:
    return get_settings().bench_data_dir


def bench_data(*parts: str) -> Path:
    """A file or folder of the data set; a missing one ends the benchmark with how to get it."""
    path = data_root().joinpath(*parts)
    if not path.exists():
        raise SystemExit(f"{path} not found: `{FETCH_COMMAND}` fills {data_root()} "
                         f"(NEXP_BENCH_DATA_DIR names another folder)")
    return path


def copy_local(source: str, output_file: str, _pooch: object) -> None:
    """--from: a copy through pooch, so it gets the download's checksum check and atomic move."""
    shutil.copyfile(source, output_file)


def fetch(root: Path, files: Sequence[DataFile], base: str | None = None,
          downloader: Downloader | None = None) -> list[Path]:
    """Every file of `files` into `root` from its public URL, or from base/<path> when `base` is
    given; pooch refuses a file whose SHA-256 differs (ValueError) and leaves no trace of it."""
    fetched = []
    for file in files:
        target = root / file.path
        source = file.url if base is None else f"{base.rstrip('/')}/{file.path}"
        fetched.append(Path(pooch.retrieve(source, known_hash=f"sha256:{file.sha256}", fname=target.name,
                                           path=target.parent, downloader=downloader, progressbar=False)))
    return fetched


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["fetch"])
    origin = parser.add_mutually_exclusive_group()
    origin.add_argument("--from", dest="folder", type=Path, help="copy from this local folder")
    origin.add_argument("--base-url", help="download from this URL instead of the public sources")
    args = parser.parse_args(argv)
    root = data_root()
    try:
        if args.folder:
            fetched = fetch(root, FILES, str(args.folder.resolve()), copy_local)
        else:
            fetched = fetch(root, FILES, args.base_url)
    except (ValueError, OSError) as e:  # a checksum pooch refused, a source missing or unreachable
        raise SystemExit(f"{FETCH_COMMAND}: {e}") from e
    print(f"{len(fetched)} files in {root}, each matching its SHA-256")


if __name__ == "__main__":
    main()
