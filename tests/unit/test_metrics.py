"""Prometheus text rendering shared by the gateway and the central service."""

from pilegate.metrics import render_metrics


def test_one_type_line_per_metric_and_labels_escaped():
    text = render_metrics(
        [
            ("pilegate_x_total", "counter", {}, 3),
            ("pilegate_pile_online", "gauge", {"pile": "F1"}, 1.0),
            ("pilegate_pile_online", "gauge", {"pile": 'a"b\\c'}, 0.0),
        ]
    )
    assert text == (
        "# TYPE pilegate_x_total counter\n"
        "pilegate_x_total 3\n"
        "# TYPE pilegate_pile_online gauge\n"
        'pilegate_pile_online{pile="F1"} 1.0\n'
        'pilegate_pile_online{pile="a\\"b\\\\c"} 0.0\n'
    )
