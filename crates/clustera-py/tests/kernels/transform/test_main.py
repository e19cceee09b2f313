"""The seed template's own test style (unittest.mock), on the unchanged kernel."""

import json
from unittest.mock import Mock

from main import OUTPUT_TOPIC, process_message


def test_process_message():
    # Create mock message
    message = Mock()
    message.value = json.dumps({"id": 42, "name": "ann"}).encode('utf-8')
    message.key = b"test-key"
    message.offset = 123

    # Create mock producer
    producer = Mock()

    # Test processing
    result = process_message(message, producer)

    assert result == True  # noqa: E712 (the seed's own words)
    # Assert producer was called correctly
    producer.send.assert_called_once()
    topic = producer.send.call_args.args[0]
    sent = producer.send.call_args.kwargs
    assert topic == OUTPUT_TOPIC
    assert sent["key"] == b"test-key"
    assert json.loads(sent["value"])["transformed"] == {"id": 42, "name": "ANN"}


def test_process_message_without_producer():
    message = Mock()
    message.value = json.dumps({"test": "data"}).encode()
    message.offset = 123

    result = process_message(message, None)
    assert result == True  # noqa: E712
