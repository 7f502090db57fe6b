"""Making the test database refuse what a test needs refused (a real failure of a real insert)."""

from __future__ import annotations

import asyncpg

from chat_server.db import libpq_url


async def refuse_inserts(database_url: str, table: str, when: str, message: str) -> None:
    """Inserts into `table` whose row satisfies `when` (SQL over `new`) fail with `message`
    (a PL/pgSQL exception: not an integrity error; `%` in `message` is `new.email`)."""
    conn = await asyncpg.connect(libpq_url(database_url))
    try:
        await conn.execute(f"""
            create function refuse_{table}() returns trigger language plpgsql as $$
            begin
              if {when} then raise exception '{message}'{", new.email" if "%" in message else ""};
              end if;
              return new;
            end $$;
            create trigger refuse_{table} before insert on {table}
              for each row execute function refuse_{table}();""")
    finally:
        await conn.close()
