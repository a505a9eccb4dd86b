// pgjdbc through Tidepool in transaction mode: 10 threads, each with its own
// connection (over 3 server connections), prepareThreshold=1 so the first
// execution of a PreparedStatement already uses a named server statement
// (S_1, S_2, ... on every connection: the names collide across clients),
// PreparedStatement reuse across transactions, batch inserts, a rollback
// after an error, and server-prepared statements that a schema change makes
// stale. Connects with the libpq variables (PGHOST, PGPORT, PGUSER,
// PGPASSWORD, PGDATABASE, and PGSSLMODE/PGSSLROOTCERT when set) that
// scripts/drivers.sh sets; prints one ok/FAIL line per check and exits 1 if
// any failed.

import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.Properties;
import java.util.concurrent.CyclicBarrier;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;

public final class DriverCheck {
    static final int CLIENTS = 10;
    static final int ROUNDS = 30;
    static final int BATCH = 50;
    // How long a new client may wait for a server connection while the others
    // sit idle (Tidepool's own checkout timeout is 60 s).
    static final int PROBE_TIMEOUT_SECONDS = 10;

    interface Check {
        void run() throws Exception;
    }

    interface Work {
        void run(Connection conn, int worker) throws Exception;
    }

    static int failed = 0;

    static void check(String name, Check check) {
        try {
            check.run();
            System.out.println("ok   " + name);
        } catch (Throwable error) {
            failed++;
            Throwable cause = error.getCause() != null ? error.getCause() : error;
            System.out.println("FAIL " + name + ": " + String.valueOf(cause).replace('\n', ' '));
            error.printStackTrace();
        }
    }

    static void expect(boolean condition, String message) {
        if (!condition) {
            throw new AssertionError(message);
        }
    }

    static Connection connect() throws SQLException {
        String url = "jdbc:postgresql://" + System.getenv("PGHOST") + ":" + System.getenv("PGPORT") + "/"
                + System.getenv("PGDATABASE");
        Properties props = new Properties();
        props.setProperty("user", System.getenv("PGUSER"));
        props.setProperty("password", System.getenv("PGPASSWORD"));
        props.setProperty("prepareThreshold", "1");
        props.setProperty("connectTimeout", "10");
        props.setProperty("socketTimeout", "60");
        // pgjdbc does not read libpq's TLS variables; pass them on as an
        // application would pass its TLS settings.
        String sslmode = System.getenv("PGSSLMODE");
        if (sslmode != null && !sslmode.isEmpty()) {
            props.setProperty("sslmode", sslmode);
        }
        String rootCert = System.getenv("PGSSLROOTCERT");
        if (rootCert != null && !rootCert.isEmpty()) {
            props.setProperty("sslrootcert", rootCert);
        }
        return DriverManager.getConnection(url, props);
    }

    static void onEveryConnection(Work work) throws Exception {
        CyclicBarrier barrier = new CyclicBarrier(CLIENTS);
        ExecutorService pool = Executors.newFixedThreadPool(CLIENTS);
        try {
            List<Future<Object>> futures = new ArrayList<>();
            for (int w = 0; w < CLIENTS; w++) {
                final int worker = w;
                futures.add(pool.submit(() -> {
                    try (Connection conn = connect()) {
                        barrier.await(60, TimeUnit.SECONDS);
                        work.run(conn, worker);
                    } catch (Throwable error) {
                        throw new Exception("worker " + worker + ": " + error, error);
                    }
                    return null;
                }));
            }
            for (Future<Object> future : futures) {
                future.get(120, TimeUnit.SECONDS);
            }
        } finally {
            pool.shutdownNow();
        }
    }

    static void createTable() throws Exception {
        try (Connection conn = connect(); Statement st = conn.createStatement()) {
            st.execute("DROP TABLE IF EXISTS jdbc_items");
            st.execute("CREATE TABLE jdbc_items (worker int, round int, note text, PRIMARY KEY (worker, round))");
        }
    }

    static void preparedAcrossTransactions(Connection conn, int worker) throws Exception {
        conn.setAutoCommit(false);
        try (PreparedStatement add = conn.prepareStatement("SELECT ?::int + ?::int");
             PreparedStatement insert = conn.prepareStatement("INSERT INTO jdbc_items (worker, round, note) VALUES (?, ?, ?)");
             PreparedStatement count = conn.prepareStatement("SELECT count(*) FROM jdbc_items WHERE worker = ?")) {
            for (int round = 0; round < ROUNDS; round++) {
                add.setInt(1, round);
                add.setInt(2, worker);
                try (ResultSet rs = add.executeQuery()) {
                    expect(rs.next() && rs.getInt(1) == round + worker, "wrong sum in round " + round);
                }
                insert.setInt(1, worker);
                insert.setInt(2, round);
                insert.setString(3, "w" + worker + "r" + round);
                expect(insert.executeUpdate() == 1, "insert did not insert");
                count.setInt(1, worker);
                try (ResultSet rs = count.executeQuery()) {
                    expect(rs.next() && rs.getLong(1) == round + 1, "round " + round + ": wrong count inside the transaction");
                }
                conn.commit();
            }
        }
    }

    static void batchInsert(Connection conn, int worker) throws Exception {
        conn.setAutoCommit(false);
        try (PreparedStatement insert = conn.prepareStatement("INSERT INTO jdbc_items (worker, round, note) VALUES (?, ?, ?)")) {
            for (int batch = 0; batch < 3; batch++) {
                for (int i = 0; i < BATCH; i++) {
                    insert.setInt(1, worker);
                    insert.setInt(2, 1000 + batch * BATCH + i);
                    insert.setString(3, "batch " + batch);
                    insert.addBatch();
                }
                int[] counts = insert.executeBatch();
                expect(counts.length == BATCH, "batch returned " + counts.length + " counts");
                conn.commit();
            }
        }
        conn.setAutoCommit(true);
        try (PreparedStatement count = conn.prepareStatement("SELECT count(*) FROM jdbc_items WHERE worker = ? AND round >= 1000")) {
            count.setInt(1, worker);
            try (ResultSet rs = count.executeQuery()) {
                expect(rs.next() && rs.getLong(1) == 3 * BATCH, "batches left the wrong number of rows");
            }
        }
    }

    static void rollbackOnError(Connection conn, int worker) throws Exception {
        conn.setAutoCommit(false);
        try (PreparedStatement insert = conn.prepareStatement("INSERT INTO jdbc_items (worker, round) VALUES (?, 9999)");
             PreparedStatement divide = conn.prepareStatement("SELECT 1 / ?::int");
             PreparedStatement count = conn.prepareStatement("SELECT count(*) FROM jdbc_items WHERE worker = ? AND round = 9999")) {
            insert.setInt(1, worker);
            insert.executeUpdate();
            divide.setInt(1, 0);
            try {
                divide.executeQuery().close();
                throw new AssertionError("1 / 0 succeeded");
            } catch (SQLException error) {
                expect("22012".equals(error.getSQLState()), "expected division_by_zero, got " + error);
            }
            conn.rollback();
            for (int round = 0; round < 5; round++) {
                count.setInt(1, worker);
                try (ResultSet rs = count.executeQuery()) {
                    expect(rs.next() && rs.getLong(1) == 0, "the failed transaction was not rolled back");
                }
                conn.commit();
            }
        }
    }

    // CLIENTS connections one after another each run a prepared query and then
    // stay open, idle: every one must still get a server connection.
    static void idleClientsHoldNoServer() throws Exception {
        List<Connection> idle = new CopyOnWriteArrayList<>();
        ExecutorService single = Executors.newSingleThreadExecutor(runnable -> {
            Thread thread = new Thread(runnable);
            thread.setDaemon(true);
            return thread;
        });
        try {
            for (int n = 0; n < CLIENTS; n++) {
                final int value = n;
                Future<Object> opened = single.submit(() -> {
                    Connection conn = connect();
                    idle.add(conn);
                    try (PreparedStatement probe = conn.prepareStatement("SELECT ?::int")) {
                        probe.setInt(1, value);
                        try (ResultSet rs = probe.executeQuery()) {
                            expect(rs.next() && rs.getInt(1) == value, "wrong answer");
                        }
                    }
                    return null;
                });
                try {
                    opened.get(PROBE_TIMEOUT_SECONDS, TimeUnit.SECONDS);
                } catch (java.util.concurrent.TimeoutException e) {
                    throw new AssertionError("client " + (n + 1) + " waited over " + PROBE_TIMEOUT_SECONDS
                            + " s for a server connection while " + n
                            + " clients sat idle after a prepared query (they still hold their servers)");
                }
            }
        } finally {
            single.shutdownNow();
            for (Connection conn : idle) {
                try {
                    conn.close();
                } catch (SQLException ignored) {
                    // Closing is best effort here.
                }
            }
        }
    }

    // CLIENTS connections, one after another, run the same server-prepared
    // SELECT *; then the table gains a column and changes a type. On Postgres
    // each connection's next run meets "cached plan must not change result
    // type" once, which pgjdbc answers (autocommit on) by preparing again and
    // retrying: every connection must see the new columns and values.
    static void schemaChangeUnderPreparedStatements() throws Exception {
        List<Connection> conns = new ArrayList<>();
        List<PreparedStatement> selects = new ArrayList<>();
        try {
            for (int n = 0; n < CLIENTS; n++) {
                Connection conn = connect();
                conns.add(conn);
                if (n == 0) {
                    try (Statement st = conn.createStatement()) {
                        st.execute("DROP TABLE IF EXISTS jdbc_shape");
                        st.execute("CREATE TABLE jdbc_shape (id int PRIMARY KEY, v int)");
                        st.execute("INSERT INTO jdbc_shape VALUES (1, 10)");
                    }
                }
                selects.add(conn.prepareStatement("SELECT * FROM jdbc_shape WHERE id = ?"));
            }
            runEverySelect(selects, 2, "10");
            try (Statement st = conns.get(0).createStatement()) {
                st.execute("ALTER TABLE jdbc_shape ADD COLUMN note text DEFAULT 'added'");
            }
            runEverySelect(selects, 3, "10");
            try (Statement st = conns.get(0).createStatement()) {
                st.execute("ALTER TABLE jdbc_shape ALTER COLUMN v TYPE bigint");
                st.execute("UPDATE jdbc_shape SET v = 5000000000");
            }
            runEverySelect(selects, 3, "5000000000");
        } finally {
            for (Connection conn : conns) {
                try {
                    conn.close();
                } catch (SQLException ignored) {
                    // Closing is best effort here.
                }
            }
        }
    }

    static void runEverySelect(List<PreparedStatement> selects, int columns, String v) throws Exception {
        for (int n = 0; n < selects.size(); n++) {
            for (int round = 0; round < 3; round++) {
                PreparedStatement select = selects.get(n);
                select.setInt(1, 1);
                try (ResultSet rs = select.executeQuery()) {
                    expect(rs.next(), "connection " + n + ": no row");
                    int got = rs.getMetaData().getColumnCount();
                    expect(got == columns, "connection " + n + ": " + got + " columns, expected " + columns);
                    expect(v.equals(rs.getString(2)), "connection " + n + ": v = " + rs.getString(2) + ", expected " + v);
                    if (columns == 3) {
                        expect("added".equals(rs.getString(3)), "connection " + n + ": note = " + rs.getString(3));
                    }
                }
            }
        }
    }

    public static void main(String[] args) {
        check("create table", DriverCheck::createTable);
        check("10 threads, prepareThreshold=1: PreparedStatement reuse across transactions",
                () -> onEveryConnection(DriverCheck::preparedAcrossTransactions));
        check("batch inserts (executeBatch) in transactions", () -> onEveryConnection(DriverCheck::batchInsert));
        check("rollback after an error, statements still usable", () -> onEveryConnection(DriverCheck::rollbackOnError));
        check("idle clients hold no server connection", DriverCheck::idleClientsHoldNoServer);
        check("server-prepared statements after ALTER TABLE: new columns, no stale rows",
                DriverCheck::schemaChangeUnderPreparedStatements);
        System.exit(failed == 0 ? 0 : 1);
    }
}
