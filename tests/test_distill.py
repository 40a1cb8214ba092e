"""SKD teacher labels: OpenAI-compatible endpoint (local server started here), resume, self-distillation."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import ClassVar

import pytest

from mdrag.errors import MdragError, UnknownNameError
from mdrag.training.teacher import (
    SelfDistillTeacher,
    distill,
    get_teacher,
    label_report,
    labels_path,
    read_labels,
)

EXAMPLES = [{"query_id": f"q{i}", "question": f"what is item {i}", "passages": [f"Item {i} is a red box."],
             "gold": f"a red box {i}"} for i in range(5)]


class FakeChat(BaseHTTPRequestHandler):
    requests: ClassVar[list[dict]] = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeChat.requests.append({"path": self.path, "body": body})
        question = body["messages"][-1]["content"].rsplit("Question: ", 1)[1]
        reply = {"choices": [{"message": {"role": "assistant", "content": f" It is a red box ({question}). "}}]}
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    FakeChat.requests = []
    httpd = HTTPServer(("127.0.0.1", 0), FakeChat)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}/v1"
    httpd.shutdown()


def test_openai_teacher_labels_every_example_with_the_papers_prompt(server, tmp_path):
    teacher = get_teacher(f"openai:my-7b@{server}")
    labels = distill(EXAMPLES, teacher, tmp_path / "labels.jsonl")
    assert labels["q3"] == "It is a red box (what is item 3)."
    assert labels["__teacher__"] == "openai:my-7b"
    req = FakeChat.requests[0]
    assert req["path"] == "/v1/chat/completions" and req["body"]["temperature"] == 0
    assert req["body"]["model"] == "my-7b" and req["body"]["max_tokens"] == 128
    assert req["body"]["messages"][0]["content"].startswith("You are a helpful assistant.")
    assert "Document 1: Item 0 is a red box." in req["body"]["messages"][1]["content"]


def test_killed_distill_resumes_without_duplicates(server, tmp_path):
    path = tmp_path / "labels.jsonl"
    teacher = get_teacher(f"openai:m@{server}")
    distill(EXAMPLES[:2], teacher, path)
    with path.open("a") as f:
        f.write('{"query_id": "q2", "gold": "x", "teacher_ans')  # torn line: killed mid-write
    FakeChat.requests = []
    distill(EXAMPLES, teacher, path)
    assert len(FakeChat.requests) == 3  # q2 (torn), q3, q4 only
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]
    assert sorted(r["query_id"] for r in rows) == [f"q{i}" for i in range(5)]
    assert len(read_labels(path)) == 5


def test_unreachable_endpoint_is_a_clear_error(tmp_path):
    teacher = get_teacher("openai:m@http://127.0.0.1:9/v1")
    with pytest.raises(MdragError, match="Teacher endpoint"):
        distill(EXAMPLES[:1], teacher, tmp_path / "l.jsonl")


def test_unknown_teacher_says_what_works():
    with pytest.raises(UnknownNameError, match="self-distill, hf:<local dir> or openai"):
        get_teacher("gpt-5")


def test_self_distill_teacher_sees_the_gold_answer_and_is_labelled_weak(tiny_generator_dir, tmp_path):
    teacher = SelfDistillTeacher(str(tiny_generator_dir))
    assert "shown the gold answer" in teacher.name and "stand-in" in teacher.name
    labels = distill(EXAMPLES[:2], teacher, labels_path(teacher, "tiny", tmp_path))
    assert set(labels) == {"q0", "q1", "__teacher__"}
    assert labels_path(teacher, "tiny", tmp_path).name.startswith("tiny-self-distill-")


def test_label_report_counts_lengths_and_containment():
    labels = {"q0": "the answer is a red box 0 indeed", "q1": "no idea", "__teacher__": "t"}
    rep = label_report(EXAMPLES[:2], labels)
    assert rep["gold_contained_in_teacher"] == 0.5
    assert rep["teacher_words"]["max"] == 8 and rep["gold_words"]["mean"] == 4


def test_teacher_comparison_has_one_row_per_teacher_file_and_the_gold_labels(tmp_path):
    from mdrag.training.teacher import teacher_comparison

    for name, answer in (("weak", "no idea"), ("strong", "It is {gold} for sure")):
        with (tmp_path / f"key-{name}.jsonl").open("w") as f:
            for e in EXAMPLES[:2]:
                f.write(json.dumps({"query_id": e["query_id"], "gold": e["gold"], "teacher": name,
                                    "teacher_answer": answer.format(gold=e["gold"])}) + "\n")
    (tmp_path / "other-x.jsonl").write_text("")  # other examples' labels are not compared
    table = teacher_comparison(EXAMPLES[:2], tmp_path, "key").set_index("teacher")
    assert list(table.index) == ["strong", "weak", "(gold labels)"]
    assert table.loc["strong", "gold contained"] == 1.0 and table.loc["weak", "gold contained"] == 0.0
    assert table.loc["weak", "mean words"] == 2 and table.loc["(gold labels)", "labelled"] == 2
