"""The relay-wide attachment quota reads a running total (``attachment_usage``, one row) kept
by triggers on ``attachments`` (migration 0010) instead of summing the table per upload. It
stays equal to the sum of the stored sizes through every way a row comes and goes — a
streamed upload, a finished resumable upload, a delete by the uploader, an account's
deletion, the expiry sweep — and the quota is enforced to the byte; on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from server.accounts.repository import take_attachments
from server.attachments import AttachmentService, LocalDiskStore
from server.clock import Clock
from server.db.engine import create_engine
from server.db.migrate import upgrade
from server.db.models_delivery import Attachment, AttachmentUsage
from server.errors import InsufficientStorage
from tests.server.ws_kit import seed_alice_and_bob

QUOTA = 3000


async def _body(size: int) -> AsyncIterator[bytes]:
    yield b"x" * size


async def _total(engine: AsyncEngine) -> int:
    """The running total, checked against the sum it stands for."""
    async with engine.connect() as conn:
        total = await conn.scalar(select(AttachmentUsage.total_bytes))
        summed = await conn.scalar(select(func.coalesce(func.sum(Attachment.size), 0)))
        rows = await conn.scalar(select(func.count()).select_from(AttachmentUsage))
    assert rows == 1
    assert total == summed
    return int(total or 0)


async def _quota_stays_exact(url: str, store: Path) -> None:
    engine = create_engine(url)
    try:
        await upgrade(engine)
        async with engine.begin() as conn:
            alice, bob, _ = await conn.run_sync(seed_alice_and_bob)
        service = AttachmentService(
            engine, LocalDiskStore(store), max_bytes=QUOTA, ttl_seconds=3600, clock=Clock(),
            quota_total=QUOTA,
        )  # fmt: skip
        assert await _total(engine) == 0
        streamed = await service.upload(bob, _body(1000), 1000)
        assert await _total(engine) == 1000
        upload = await service.create_upload(alice, 1500)
        assert await _total(engine) == 1000  # reserved, not stored
        with pytest.raises(InsufficientStorage):  # 1000 stored + 1500 reserved + 501
            await service.upload(bob, _body(501), 501)
        await service.append(alice, upload.id, 0, 1500, _body(1500))
        finished, _ = await service.finish(alice, upload.id)
        assert await _total(engine) == 2500
        await service.upload(bob, _body(500), 500)  # exactly up to the quota
        assert await _total(engine) == QUOTA
        with pytest.raises(InsufficientStorage):
            await service.upload(bob, _body(1), 1)
        assert await service.delete(bob, streamed.id)
        assert await _total(engine) == 2000
        async with AsyncSession(engine) as session, session.begin():  # alice's account goes
            assert await take_attachments(session, [alice]) == [finished.id]
        assert await _total(engine) == 500
        await service.upload(alice, _body(2500), 2500)  # what was freed is usable at once
        assert await _total(engine) == QUOTA
        assert await service.sweep(now=Clock().now() + 7200) == 2  # both expired
        assert await _total(engine) == 0
    finally:
        await engine.dispose()


async def test_the_attachment_total_stays_exact_on_sqlite(tmp_path: Path) -> None:
    await _quota_stays_exact(f"sqlite+aiosqlite:///{tmp_path / 'usage.sqlite3'}", tmp_path / "a")


@pytest.mark.postgres
async def test_the_attachment_total_stays_exact_on_postgresql(
    postgres_url: str, tmp_path: Path
) -> None:
    await _quota_stays_exact(postgres_url, tmp_path / "a")
