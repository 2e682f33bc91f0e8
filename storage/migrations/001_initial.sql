-- Papers: one row per arXiv id without version; a new version updates the row in place.
CREATE TABLE papers (
    id INTEGER PRIMARY KEY,             -- explicit so VACUUM never renumbers the FTS rowids
    arxiv_id TEXT NOT NULL UNIQUE,
    version INTEGER NOT NULL DEFAULT 1,
    title TEXT NOT NULL,
    abstract TEXT NOT NULL DEFAULT '',
    authors TEXT NOT NULL DEFAULT '',   -- "A, B, C": indexed text
    authors_json TEXT NOT NULL DEFAULT '[]',
    categories TEXT NOT NULL DEFAULT '', -- space separated, primary first
    cats TEXT NOT NULL DEFAULT '',       -- category index tokens (bot.text.category_tokens)
    primary_category TEXT,
    submitted TEXT,
    updated TEXT,
    announced TEXT,
    published TEXT,                      -- the day we date the paper by (bot.models.Paper.published)
    comment TEXT,
    doi TEXT,
    journal_ref TEXT,
    upvotes INTEGER,
    ai_summary TEXT,
    ai_keywords TEXT NOT NULL DEFAULT '[]',
    github_repo TEXT,
    hf_day TEXT,
    first_seen TEXT NOT NULL,
    last_seen TEXT NOT NULL,
    routed INTEGER NOT NULL DEFAULT 1    -- 0: a new announcement not yet queued for channels and alerts
);
CREATE INDEX papers_unrouted ON papers(routed) WHERE routed = 0;
CREATE INDEX papers_published ON papers(published);
CREATE INDEX papers_announced ON papers(announced);

CREATE TABLE paper_sources (
    arxiv_id TEXT NOT NULL,
    source TEXT NOT NULL,
    first_seen TEXT NOT NULL,
    last_seen TEXT NOT NULL,
    PRIMARY KEY (arxiv_id, source)
) WITHOUT ROWID;

CREATE VIRTUAL TABLE papers_fts USING fts5(
    title, abstract, authors, cats,
    content='papers', content_rowid='id',
    tokenize='porter unicode61 remove_diacritics 2'
);
CREATE TRIGGER papers_ai AFTER INSERT ON papers BEGIN
    INSERT INTO papers_fts(rowid, title, abstract, authors, cats)
    VALUES (new.id, new.title, new.abstract, new.authors, new.cats);
END;
CREATE TRIGGER papers_ad AFTER DELETE ON papers BEGIN
    INSERT INTO papers_fts(papers_fts, rowid, title, abstract, authors, cats)
    VALUES ('delete', old.id, old.title, old.abstract, old.authors, old.cats);
END;
CREATE TRIGGER papers_au AFTER UPDATE OF title, abstract, authors, cats ON papers BEGIN
    INSERT INTO papers_fts(papers_fts, rowid, title, abstract, authors, cats)
    VALUES ('delete', old.id, old.title, old.abstract, old.authors, old.cats);
    INSERT INTO papers_fts(rowid, title, abstract, authors, cats)
    VALUES (new.id, new.title, new.abstract, new.authors, new.cats);
END;

CREATE TABLE channels (
    key TEXT PRIMARY KEY,
    platform TEXT NOT NULL,
    workspace TEXT NOT NULL DEFAULT '',
    channel_id TEXT NOT NULL,
    kind TEXT NOT NULL DEFAULT 'text',
    name TEXT NOT NULL DEFAULT '',
    categories TEXT NOT NULL DEFAULT '',
    query TEXT,
    post_time TEXT NOT NULL DEFAULT '09:00',
    timezone TEXT NOT NULL DEFAULT 'UTC',
    cap INTEGER NOT NULL DEFAULT 30,
    weekends INTEGER NOT NULL DEFAULT 0,
    paused_reason TEXT,
    created TEXT NOT NULL,
    updated TEXT NOT NULL
);

-- Papers waiting for a channel's thread; thread_day is set when a thread claims them (never cleared).
CREATE TABLE channel_queue (
    channel_key TEXT NOT NULL,
    arxiv_id TEXT NOT NULL,
    queued_at TEXT NOT NULL,
    seq INTEGER NOT NULL,
    thread_day TEXT,
    PRIMARY KEY (channel_key, arxiv_id)
) WITHOUT ROWID;
CREATE INDEX channel_queue_open ON channel_queue(channel_key, thread_day, seq);

CREATE TABLE subscriptions (
    id INTEGER PRIMARY KEY,
    user_key TEXT NOT NULL,
    platform TEXT NOT NULL,
    workspace TEXT NOT NULL DEFAULT '',
    user_id TEXT NOT NULL,
    user_name TEXT NOT NULL DEFAULT '',
    query TEXT NOT NULL,
    created TEXT NOT NULL,
    UNIQUE (user_key, query)
);

CREATE TABLE users (
    user_key TEXT PRIMARY KEY,
    unreachable TEXT,
    notice TEXT,
    updated TEXT NOT NULL
);

-- The delivery ledger: a row per message, written (pending) before the message is sent.
CREATE TABLE deliveries (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    platform TEXT NOT NULL,
    target TEXT NOT NULL,
    kind TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    payload TEXT NOT NULL DEFAULT '',
    message_id TEXT,
    parent_key TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    created TEXT NOT NULL,
    updated TEXT NOT NULL
);
CREATE INDEX deliveries_state ON deliveries(state, id);
CREATE INDEX deliveries_target ON deliveries(target, id);

CREATE TABLE delivery_papers (
    arxiv_id TEXT NOT NULL,
    delivery_id INTEGER NOT NULL REFERENCES deliveries(id),
    PRIMARY KEY (arxiv_id, delivery_id)
) WITHOUT ROWID;

CREATE TABLE source_status (
    source TEXT PRIMARY KEY,
    last_run TEXT,
    outcome TEXT NOT NULL,
    papers INTEGER NOT NULL DEFAULT 0,
    detail TEXT NOT NULL DEFAULT ''
);

CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
