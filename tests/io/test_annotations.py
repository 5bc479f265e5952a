import pytest

from mateffnet.io.annotations import (
    detect_format,
    folders,
    hmdb51,
    kinetics400,
    load_annotations,
    missing_summary,
    split_missing,
    ucf101,
    video_list,
)
from mateffnet.errors import MateffnetError


@pytest.fixture(scope="session")
def ucf_splits(shared_data):
    return shared_data / "splits/ucf101/ucfTrainTestlist"


@pytest.fixture(scope="session")
def hmdb_splits(shared_data):
    return shared_data / "splits/hmdb51/testTrainMulti_7030_splits"


@pytest.mark.parametrize("split, train, test", [(1, 9537, 3783), (2, 9586, 3734), (3, 9624, 3696)])
def test_ucf101_official_split_sizes(shared_data, ucf_splits, split, train, test):
    ann = ucf101(shared_data / "videos/ucf101", ucf_splits, split)
    assert len(ann.classes) == 101
    assert (len(ann.items("train")), len(ann.items("test"))) == (train, test)
    assert len(ann.items()) == 13320
    assert {item.label for item in ann.items("test")} == set(range(101))


def test_ucf101_labels_match_class_folders(shared_data, ucf_splits):
    ann = ucf101(shared_data / "videos/ucf101", ucf_splits, 1)
    assert ann.classes[0] == "ApplyEyeMakeup" and ann.classes[-1] == "YoYo"  # CRLF stripped
    by_id = {item.video_id: item for item in ann.items()}
    for item in ann.items():
        assert ann.classes[item.label] == item.video_id.split("/")[0]
    train_ids = {item.video_id for item in ann.items("train")}
    test_ids = {item.video_id for item in ann.items("test")}
    assert "SoccerJuggling/v_SoccerJuggling_g23_c01" in train_ids
    assert "SoccerJuggling/v_SoccerJuggling_g24_c01" in train_ids
    for name in ("Basketball/v_Basketball_g01_c01", "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01", "Archery/v_Archery_g01_c01"):
        assert name in test_ids
        assert ann.classes[by_id[name].label] == name.split("/")[0]
    # the real clips are found where they live; the rest are reported missing
    present, missing = split_missing(ann.items())
    assert sorted(item.path.name for item in present) == [
        "v_ApplyEyeMakeup_g01_c01.avi",
        "v_Archery_g01_c01.avi",
        "v_Basketball_g01_c01.avi",
        "v_SoccerJuggling_g23_c01.avi",
        "v_SoccerJuggling_g24_c01.avi",
    ]
    assert len(missing) == 13320 - 5
    summary = missing_summary(missing, 13320)
    assert summary.startswith("13315 of 13320 listed videos are missing") and "(13310 more)" in summary
    assert "\n" not in summary


def test_ucf101_bad_label_is_a_one_line_error(tmp_path, ucf_splits):
    (tmp_path / "classInd.txt").write_bytes((ucf_splits / "classInd.txt").read_bytes())
    (tmp_path / "trainlist01.txt").write_text("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 7\r\n")
    (tmp_path / "testlist01.txt").write_text("")
    with pytest.raises(MateffnetError, match=r"trainlist01.txt:1: label '7' disagrees with class folder 'ApplyEyeMakeup'"):
        ucf101(tmp_path, tmp_path, 1)


@pytest.mark.parametrize("split", [1, 2, 3])
def test_hmdb51_official_split_sizes(shared_data, hmdb_splits, split):
    ann = hmdb51(shared_data / "videos/hmdb51", hmdb_splits, split)
    assert len(ann.classes) == 51
    assert (len(ann.items("train")), len(ann.items("test"))) == (3570, 1530)


def test_hmdb51_classes_follow_tsn_and_marks_pick_subsets(shared_data, hmdb_splits):
    expected_order = (hmdb_splits / "class_list.txt").read_text().split()
    assert expected_order != sorted(expected_order)  # TSN's own order: kick_ball before kick
    marks = {  # README: split1/2/3 marks of the real clips
        "wave/RATRACE_wave_f_nm_np1_fr_goo_37": "121",
        "wave/SchoolRulesHowTheyHelpUs_wave_f_nm_np1_ba_med_0": "001",
        "wave/TrumanShow_wave_f_nm_np1_fr_med_26": "211",
        "cartwheel/Turnk_r_Pippi_Michel_cartwheel_f_cm_np2_le_med_6": "112",
    }
    for split in (1, 2, 3):
        ann = hmdb51(shared_data / "videos/hmdb51", hmdb_splits, split)
        assert ann.classes == expected_order
        subset_of = {item.video_id: name for name in ("train", "test") for item in ann.items(name)}
        for video_id, mark in marks.items():
            expected = {"1": "train", "2": "test", "0": None}[mark[split - 1]]
            assert subset_of.get(video_id) == expected, (video_id, split)
        labelled = {item.video_id: item for item in ann.items()}
        for video_id in marks:
            if video_id in labelled:
                assert ann.classes[labelled[video_id].label] == video_id.split("/")[0]
                assert labelled[video_id].path.is_file()


def test_kinetics_csv_names_trimmed_files_and_tolerates_missing(tmp_path, shared_data):
    labels = (shared_data / "labels/kinetics400.txt").read_text().splitlines()
    csv_file = tmp_path / "validate.csv"
    csv_file.write_text(
        "label,youtube_id,time_start,time_end,split\n"
        '"arm wrestling",abc123XYZ_-,14,24,val\n'
        '"passing American football (in game)",zzz,0,10,val\n'
        "abseiling,qqq,3,13,val\n"
    )
    videos = tmp_path / "videos" / "nested"
    videos.mkdir(parents=True)
    (videos / "abc123XYZ_-_000014_000024.mp4").write_bytes(b"x")
    (videos / "qqq_000003_000013.mkv").write_bytes(b"x")
    ann = kinetics400(tmp_path / "videos", csv_file)
    items = ann.items("val")
    assert [item.video_id for item in items] == ["abc123XYZ_-_000014_000024", "zzz_000000_000010", "qqq_000003_000013"]
    assert [ann.classes[item.label] for item in items] == ["arm wrestling", "passing American football (in game)", "abseiling"]
    assert ann.classes == sorted(ann.classes)  # the standard Kinetics order is alphabetical
    assert labels == sorted(labels)
    present, missing = split_missing(items)
    assert [item.video_id for item in missing] == ["zzz_000000_000010"]
    assert present[1].path.suffix == ".mkv"
    assert detect_format(csv_file) == "kinetics400"


def test_kinetics_folder_layout_uses_the_label_list(shared_data):
    ann = load_annotations(shared_data / "videos/kinetics400", "kinetics400", shared_data / "labels/kinetics400.txt")
    assert len(ann.classes) == 400
    (item,) = ann.items()
    assert item.video_id == "arm_wrestling/demo"
    assert ann.classes[item.label] == "arm wrestling"
    assert detect_format(shared_data / "labels/kinetics400.txt") == "folders"


def test_list_file_formats(tmp_path):
    (tmp_path / "a").mkdir()
    listing = tmp_path / "train.txt"
    listing.write_text("a/one.mp4 3\r\nb/two.avi 120 0\n\nthree.avi\n")
    ann = video_list(listing)
    assert [(i.video_id, i.label) for i in ann.items()] == [("a/one", 3), ("b/two", 0), ("three", -1)]
    assert ann.items()[0].path == tmp_path / "a/one.mp4"
    assert ann.classes == ["0", "1", "2", "3"]
    assert detect_format(listing) == "list"
    rooted = video_list(listing, src=tmp_path / "elsewhere")
    assert rooted.items()[0].path == tmp_path / "elsewhere/a/one.mp4"
    listing.write_text("a/one.mp4 3\na/one.mp4 2\n")
    with pytest.raises(MateffnetError, match="train.txt:2: video 'a/one.mp4' is listed twice"):
        video_list(listing)


def test_folders_layout(shared_data):
    ann = folders(shared_data / "videos")
    assert len(ann.items()) == 10
    assert ann.classes == ["ApplyEyeMakeup", "Archery", "Basketball", "SoccerJuggling", "arm_wrestling", "cartwheel", "wave"]
    by_id = {item.video_id: item for item in ann.items()}
    assert ann.classes[by_id["hmdb51/cartwheel/Turnk_r_Pippi_Michel_cartwheel_f_cm_np2_le_med_6"].label] == "cartwheel"
    assert detect_format(None) == "folders"


def test_folders_with_a_class_list_rejects_unknown_folders(tmp_path):
    for name in ("arm_wrestling", "Mystery"):
        (tmp_path / "v" / name).mkdir(parents=True)
        (tmp_path / "v" / name / "x.mp4").write_bytes(b"")
    classes = tmp_path / "classes.txt"
    classes.write_text("abseiling\narm wrestling\n")
    with pytest.raises(MateffnetError, match="1 folder\\(s\\) match no class in .*classes.txt: Mystery"):
        folders(tmp_path / "v", classes)


def test_detection_and_errors(tmp_path, ucf_splits, hmdb_splits):
    assert detect_format(ucf_splits) == "ucf101"
    assert detect_format(ucf_splits / "trainlist02.txt") == "ucf101"
    assert detect_format(hmdb_splits) == "hmdb51"
    with pytest.raises(MateffnetError, match="no such annotations"):
        detect_format(tmp_path / "nope.txt")
    with pytest.raises(MateffnetError, match="split must be 1, 2 or 3"):
        ucf101(tmp_path, ucf_splits, 4)
    with pytest.raises(MateffnetError, match="needs --annotations"):
        load_annotations(tmp_path, "ucf101")
    with pytest.raises(MateffnetError, match="unknown dataset format 'ucf'"):
        load_annotations(tmp_path, "ucf", ucf_splits)
    ann = load_annotations(tmp_path, "auto", ucf_splits, split=2)
    assert ann.format == "ucf101" and len(ann.items("train")) == 9586


def test_hmdb51_without_class_list_sorts_names(tmp_path, hmdb_splits):
    for f in hmdb_splits.glob("*_test_split1.txt"):
        (tmp_path / f.name).write_bytes(f.read_bytes())
    ann = hmdb51(tmp_path, tmp_path, 1)
    assert ann.classes == sorted(ann.classes) and len(ann.classes) == 51


# ------------------------------------------------------------------ hostile and poor annotations (issue 18)


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


@pytest.mark.parametrize("entry", ["../outside/victim.mp4 1", "../../../../etc/passwd 0", "a/../../x.mp4 0"])
def test_a_list_entry_that_climbs_out_of_the_source_is_refused_naming_it(tmp_path, entry):
    listing = tmp_path / "src" / "list.txt"
    _touch(tmp_path / "outside/victim.mp4")
    listing.parent.mkdir()
    listing.write_text(f"ok.mp4 0\n{entry}\n")
    with pytest.raises(MateffnetError, match=f"list.txt:2: entry '{entry.split()[0]}' climbs out of the source folder"):
        video_list(listing)


def test_a_list_entry_with_dotdot_that_stays_inside_is_accepted(tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text("a/../b/x.mp4 0\n")
    (item,) = video_list(listing).items()
    assert item.path == tmp_path / "a/../b/x.mp4"


def test_an_absolute_list_entry_is_read_but_its_id_is_its_file_name(tmp_path):
    outside = _touch(tmp_path / "elsewhere" / "clip.mp4")
    listing = tmp_path / "src" / "list.txt"
    listing.parent.mkdir()
    listing.write_text(f"{outside} 1\n")
    (item,) = video_list(listing).items()
    assert item.path == outside and item.video_id == "clip"


def test_an_hmdb51_entry_that_climbs_out_is_refused(tmp_path):
    (tmp_path / "wave_test_split1.txt").write_text("ok.avi 1\n../../escaped.avi 2\n")
    with pytest.raises(MateffnetError, match=r"wave_test_split1.txt:2: entry 'wave/../../escaped.avi' climbs out"):
        hmdb51(tmp_path / "videos", tmp_path, 1)


def test_a_ucf101_entry_that_climbs_out_is_refused(tmp_path):
    (tmp_path / "classInd.txt").write_text("1 Archery\n")
    (tmp_path / "trainlist01.txt").write_text("../../evil.avi 1\n")
    (tmp_path / "testlist01.txt").write_text("Archery/v_Archery_g01_c01.avi\n")
    with pytest.raises(MateffnetError, match=r"trainlist01.txt:1: entry '../../evil.avi' climbs out"):
        ucf101(tmp_path / "videos", tmp_path, 1)


@pytest.mark.parametrize("youtube_id", ["../evil", "a/b", ".hidden", ""])
def test_a_kinetics_youtube_id_with_a_path_in_it_is_refused(tmp_path, youtube_id):
    csv_file = tmp_path / "val.csv"
    csv_file.write_text(f"label,youtube_id,time_start,time_end,split\nabseiling,ok,0,10,val\nabseiling,{youtube_id},0,10,val\n")
    with pytest.raises(MateffnetError, match=f"val.csv:3: youtube_id '{youtube_id}' is not a video id"):
        kinetics400(tmp_path, csv_file)


def test_two_kinetics_rows_of_one_video_are_refused(tmp_path):
    folder = tmp_path / "csv"
    folder.mkdir()
    (folder / "train.csv").write_text("label,youtube_id,time_start,time_end,split\nabseiling,dup,0,10,train\n")
    (folder / "validate.csv").write_text("label,youtube_id,time_start,time_end,split\nabseiling,dup,0,10,val\n")
    with pytest.raises(MateffnetError, match="csv: video dup_000000_000010 is listed twice"):
        kinetics400(tmp_path, folder)


def test_two_files_of_one_id_in_class_folders_are_refused(tmp_path):
    _touch(tmp_path / "c/a.mp4")
    _touch(tmp_path / "c/a.avi")
    with pytest.raises(MateffnetError, match=r"two videos would share the packed file c/a: .*c/a.avi and .*c/a.mp4"):
        folders(tmp_path)


def test_two_different_files_of_one_name_in_a_list_are_not_called_listed_twice(tmp_path):
    one, two = _touch(tmp_path / "d1/x.mp4"), _touch(tmp_path / "d2/x.mp4")
    listing = tmp_path / "src" / "list.txt"
    listing.parent.mkdir()
    listing.write_text(f"{one} 0\n{two} 1\n")
    with pytest.raises(MateffnetError, match=r"two videos would share the packed file x: .*d1/x.mp4 and .*d2/x.mp4"):
        video_list(listing)


def test_a_folder_link_loop_is_walked_once_with_a_warning(tmp_path):
    _touch(tmp_path / "cls/v.mp4")
    (tmp_path / "cls/loop").symlink_to(".")
    with pytest.warns(UserWarning, match="cls/loop: a folder link leads back to a folder already walked"):
        ann = folders(tmp_path)
    assert [item.video_id for item in ann.items()] == ["cls/v"]
    assert ann.classes == ["cls"]


def test_a_folder_link_to_another_folder_is_still_followed(tmp_path):
    _touch(tmp_path / "real/cls/v.mp4")
    (tmp_path / "src").mkdir()
    (tmp_path / "src/cls").symlink_to(tmp_path / "real/cls")
    assert [item.video_id for item in folders(tmp_path / "src").items()] == ["cls/v"]


def test_gifs_count_as_videos_in_class_folders_as_in_list_files(tmp_path):
    _touch(tmp_path / "c/a.gif")
    _touch(tmp_path / "c/b.mp4")
    assert [item.video_id for item in folders(tmp_path).items()] == ["c/a", "c/b"]
    listing = tmp_path / "list.txt"
    listing.write_text("c/a.gif\n")
    assert detect_format(listing) == "list"


@pytest.mark.parametrize("label", ["x", "1.5", "one"])
def test_a_label_that_is_not_a_whole_number_is_an_error_not_part_of_the_name(tmp_path, label):
    listing = tmp_path / "list.txt"
    listing.write_text(f"a.mp4 0\nb.mp4 {label}\n")
    with pytest.raises(MateffnetError, match=f"list.txt:2: label '{label}' of 'b.mp4' is not a whole number"):
        video_list(listing)


def test_a_path_with_spaces_and_no_label_still_reads(tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text("my clip.mp4 2\nother clip.mp4\n")
    assert [(i.video_id, i.label) for i in video_list(listing).items()] == [("my clip", 2), ("other clip", -1)]


@pytest.mark.parametrize("name", ["list.txt", "classInd.txt"])
def test_an_empty_annotation_file_is_an_error(tmp_path, name):
    empty = tmp_path / name
    empty.write_text("\n \r\n")
    with pytest.raises(MateffnetError, match=f"{name}: empty annotation file"):
        load_annotations(tmp_path, "auto", empty)


def test_an_empty_list_file_is_an_error_in_list_format_too(tmp_path):
    empty = tmp_path / "list.txt"
    empty.write_text("")
    with pytest.raises(MateffnetError, match="list.txt: empty annotation file"):
        load_annotations(tmp_path, "list", empty)


# ------------------------------------------- motion-centric datasets: Something-Something v2, Kinetics-600/700, Diving48

from mateffnet.io.annotations import diving48, kinetics600, kinetics700, sthv2  # noqa: E402


@pytest.fixture(scope="session")
def official(shared_data):
    """The datasets' own annotation files (../shared/data/annotations, README there)."""
    folder = shared_data / "annotations"
    if not folder.is_dir():
        pytest.skip(f"no official annotation files at {folder}")
    return folder


def test_sthv2_official_validation_and_test_splits(official, tmp_path):
    ann = sthv2(tmp_path, official / "sthv2")
    assert len(ann.classes) == 174
    assert ann.classes[0] == "Approaching something with your camera"  # id "0" in the labels file
    assert set(ann.subsets) == {"validation", "test"}  # the train split is not in shared
    validation, test = ann.items("validation"), ann.items("test")
    assert (len(validation), len(test)) == (24777, 27157)
    assert {item.label for item in validation} == set(range(174))
    assert {item.label for item in test} == {-1}  # the test split has no labels
    first = validation[0]  # {"id":"74225", "template":"Spinning [something] that quickly stops spinning", ...}
    assert first.video_id == "74225" and first.path.name == "74225.webm"
    assert ann.classes[first.label] == "Spinning something that quickly stops spinning"
    # templates with other placeholders ([number of], [part]) name their class without brackets as well
    names = {ann.classes[item.label] for item in validation}
    assert {"Stacking number of something", "Moving part of something"} <= names
    # the labels file's order is mmaction2's label map's
    label_map = [line.strip() for line in (official / "sthv2/label_map.txt").read_text().splitlines() if line.strip()]
    assert ann.classes == label_map


def test_sthv2_template_not_in_the_labels_file_is_a_one_line_error(official, tmp_path):
    (tmp_path / "something-something-v2-labels.json").write_bytes((official / "sthv2/something-something-v2-labels.json").read_bytes())
    (tmp_path / "something-something-v2-validation.json").write_text(
        '[{"id": "1", "label": "x", "template": "Juggling [something]", "placeholders": ["x"]}]')
    with pytest.raises(MateffnetError, match=r"entry 0 \(id 1\): template 'Juggling \[something\]' is not a class"):
        sthv2(tmp_path, tmp_path)


def test_kinetics600_official_validation_csv_and_test_samples(official, tmp_path):
    ann = kinetics600(tmp_path, official / "kinetics600/kinetics-600_val.csv")
    assert ann.format == "kinetics600" and len(ann.classes) == 600
    assert len(ann.items("val")) == 30000
    counts = {}
    for item in ann.items("val"):
        counts[item.label] = counts.get(item.label, 0) + 1
    assert set(counts.values()) == {50}
    assert ann.items("val")[0].video_id == "yq_M1PMw2hY_000038_000048"
    labelled = kinetics600(tmp_path, official / "kinetics600/kinetics_600_test_labelled.first200.csv")
    assert len(labelled.items("test")) == 200 and min(i.label for i in labelled.items("test")) >= 0
    unlabelled = kinetics600(tmp_path, official / "kinetics600/kinetics-600_test.first200.csv")
    assert len(unlabelled.items("test")) == 200 and {i.label for i in unlabelled.items("test")} == {-1}
    holdout = kinetics600(tmp_path, official / "kinetics600/kinetics_600_holdout_test.first200.csv")
    assert len(holdout.items("holdout_test")) == 200


def test_kinetics600_folder_takes_its_class_order_from_the_label_file_and_is_detected(official, tmp_path):
    folder = tmp_path / "k600"
    folder.mkdir()
    for name in ("kinetics-600_test.first200.csv", "label_map_600.txt"):
        (folder / name).write_bytes((official / "kinetics600" / name).read_bytes())
    ann = load_annotations(tmp_path, "auto", folder)
    assert ann.format == "kinetics600" and len(ann.classes) == 600  # classes of an unlabelled CSV: from the file
    assert ann.classes[:2] == ["abseiling", "acting in play"]
    assert len(ann.items("test")) == 200


def test_kinetics700_class_list_and_detection(official, tmp_path):
    folder = tmp_path / "k700"
    folder.mkdir()
    (folder / "categories.json").write_bytes((official / "kinetics700/categories.json").read_bytes())
    (folder / "val.csv").write_text("label,youtube_id,time_start,time_end,split\n"
                                    "abseiling,aaaaaaaaaaa,1,11,val\nzumba,bbbbbbbbbbb,0,10,val\n")
    assert detect_format(folder) == "kinetics700"
    ann = kinetics700(tmp_path, folder)
    labels = [line.strip() for line in (official / "kinetics700/label_map_k700.txt").read_text().splitlines() if line.strip()]
    assert ann.classes == labels and len(labels) == 700
    assert [ann.classes[i.label] for i in ann.items("val")] == ["abseiling", "zumba"]
    (folder / "val.csv").write_text("label,youtube_id,time_start,time_end,split\nunheard of,ccccccccccc,0,10,val\n")
    with pytest.raises(MateffnetError, match="categories.json: 1 label"):
        kinetics700(tmp_path, folder)


def diving48_folder(folder, vocab=True):
    """Diving48's files as published (schema of the official JSON; the files themselves are not in shared)."""
    import json

    folder.mkdir(parents=True, exist_ok=True)
    if vocab:
        (folder / "Diving48_vocab.json").write_text(json.dumps(
            [["Back", "15som", "05Twis", "FREE"], ["Back", "15som", "15Twis", "FREE"], ["Forward", "25som", "NoTwis", "PIKE"]]))
    (folder / "Diving48_V2_train.json").write_text(json.dumps(
        [{"vid_name": "-mmq0PT-u8k_00155", "label": 0, "start_frame": 0, "end_frame": 84},
         {"vid_name": "-mmq0PT-u8k_00156", "label": 2, "start_frame": 0, "end_frame": 90}]))
    (folder / "Diving48_V2_test.json").write_text(json.dumps(
        [{"vid_name": "0GtdqDr0F2M_00001", "label": 1, "start_frame": 0, "end_frame": 77}]))
    return folder


def test_diving48_published_schema(tmp_path):
    folder = diving48_folder(tmp_path / "ann")
    assert detect_format(folder) == "diving48"
    ann = diving48(tmp_path / "rgb", folder)
    assert ann.classes == ["Back+15som+05Twis+FREE", "Back+15som+15Twis+FREE", "Forward+25som+NoTwis+PIKE"]
    assert [(i.video_id, i.path.name, i.label) for i in ann.items("train")] == [
        ("-mmq0PT-u8k_00155", "-mmq0PT-u8k_00155.mp4", 0), ("-mmq0PT-u8k_00156", "-mmq0PT-u8k_00156.mp4", 2)]
    assert [i.label for i in ann.items("test")] == [1]


def test_diving48_vocabulary_names_are_mmaction2s_label_map(official, tmp_path):
    label_map = (official / "diving48/label_map.txt").read_text().split()
    assert len(label_map) == 48 and label_map[0] == "Back+15som+05Twis+FREE"
    folder = diving48_folder(tmp_path / "ann", vocab=False)
    (folder / "label_map.txt").write_bytes((official / "diving48/label_map.txt").read_bytes())
    assert diving48(tmp_path, folder).classes == label_map  # without the vocabulary, its label map serves
    (folder / "Diving48_V2_test.json").write_text('[{"vid_name": "x", "label": 48}]')
    with pytest.raises(MateffnetError, match=r"Diving48_V2_test.json: entry 0 \(x\): label must be 0…47, got 48"):
        diving48(tmp_path, folder)


def test_missing_motion_dataset_videos_are_summarised_in_one_line(tmp_path):
    folder = diving48_folder(tmp_path / "ann")
    (tmp_path / "rgb").mkdir()
    (tmp_path / "rgb" / "-mmq0PT-u8k_00156.mp4").write_bytes(b"x")
    present, missing = split_missing(diving48(tmp_path / "rgb", folder).items())
    assert [i.video_id for i in present] == ["-mmq0PT-u8k_00156"]
    assert missing_summary(missing, 3) == ("2 of 3 listed videos are missing and left out: -mmq0PT-u8k_00155.mp4, "
                                           "0GtdqDr0F2M_00001.mp4")
