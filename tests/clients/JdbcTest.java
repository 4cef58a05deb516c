// pgJDBC's typical usage, for tests/clients/jdbc_test.sh: prints one line per result, and the
// script compares the lines printed against PostgreSQL directly with those printed through
// pgstash. Nothing printed may depend on the server connection (no pids, no txids, no oids).
//
//   java -cp postgresql.jar:DIR JdbcTest PORT TABLE_PREFIX
import java.security.MessageDigest;
import java.sql.*;
import java.util.*;
import java.util.concurrent.*;
import org.postgresql.PGStatement;

public class JdbcTest {
  static String url;

  static Connection connect() throws SQLException {
    return DriverManager.getConnection(url, "postgres", "");
  }

  static void out(String what, Object value) {
    System.out.println(what + ": " + value);
  }

  static String md5(byte[] b) throws Exception {
    return HexFormat.of().formatHex(MessageDigest.getInstance("MD5").digest(b));
  }

  public static void main(String[] args) throws Exception {
    url = "jdbc:postgresql://127.0.0.1:" + args[0]
        + "/pgstash_test?connectTimeout=10&socketTimeout=30&ApplicationName=jdbc_test";
    String t = args[1];
    try (Connection c = connect()) {
      try (Statement st = c.createStatement()) {
        st.execute("drop table if exists " + t + ", " + t + "_blob");
        st.execute("create table " + t + " (id int primary key, name text not null, price numeric(10,2),"
            + " created timestamptz, tags text[])");
        st.execute("create table " + t + "_blob (id int primary key, data bytea)");
      }

      // Past prepareThreshold (5) the driver switches to a named server-side statement (S_n).
      try (PreparedStatement ps = c.prepareStatement("select ?::int * 2, md5(?::text), ?::text is null")) {
        for (int i = 0; i < 12; i++) {
          ps.setInt(1, i);
          ps.setString(2, "v" + i);
          ps.setString(3, i % 3 == 0 ? null : "x");
          try (ResultSet rs = ps.executeQuery()) {
            rs.next();
            out("reuse " + i + " server-prepared=" + ps.unwrap(PGStatement.class).isUseServerPrepare(),
                rs.getInt(1) + " " + rs.getString(2) + " " + rs.getBoolean(3));
          }
        }
      }

      // Batch inserts, then a batch failing in the middle.
      try (PreparedStatement ps = c.prepareStatement("insert into " + t + " values (?, ?, ?, ?, ?)")) {
        for (int i = 1; i <= 2000; i++) {
          ps.setInt(1, i);
          ps.setString(2, "item " + i + " ✓");
          ps.setBigDecimal(3, new java.math.BigDecimal(i).movePointLeft(2));
          ps.setTimestamp(4, new Timestamp(1700000000000L + i * 1000L));
          ps.setArray(5, c.createArrayOf("text", new String[] {"a" + i, null, "b,c"}));
          ps.addBatch();
        }
        int[] counts = ps.executeBatch();
        out("batch", counts.length + " statements, " + Arrays.stream(counts).sum() + " rows");
        for (int id : new int[] {3001, 3002, 5, 3003}) {
          ps.setInt(1, id);
          ps.setString(2, "dup?");
          ps.setBigDecimal(3, null);
          ps.setTimestamp(4, null);
          ps.setArray(5, null);
          ps.addBatch();
        }
        try {
          ps.executeBatch();
          out("failing batch", "no error");
        } catch (BatchUpdateException e) {
          out("failing batch", e.getSQLState());
        }
      }
      try (Statement st = c.createStatement();
           ResultSet rs = st.executeQuery("select count(*), sum(price), max(id) from " + t)) {
        rs.next();
        out("after batches", rs.getLong(1) + " " + rs.getBigDecimal(2) + " " + rs.getInt(3));
      }

      // setFetchSize in a transaction: the driver reads a portal 100 rows at a time.
      c.setAutoCommit(false);
      try (Statement st = c.createStatement()) {
        st.setFetchSize(100);
        long n = 0, sum = 0;
        StringBuilder h = new StringBuilder();
        try (ResultSet rs = st.executeQuery("select g, md5(g::text) from generate_series(1, 10000) g")) {
          while (rs.next()) {
            n++;
            sum += rs.getLong(1);
            if (n % 1000 == 0) h.append(rs.getString(2), 0, 4);
          }
        }
        out("fetchSize cursor", n + " rows, sum " + sum + ", " + h);
        try (PreparedStatement ps = c.prepareStatement("select id, name from " + t + " where id > ? order by id")) {
          ps.setFetchSize(50);
          ps.setInt(1, 1500);
          int rows = 0;
          try (ResultSet rs = ps.executeQuery()) {
            while (rs.next() && rows++ < 120) { }
          }
          out("fetchSize closed early", rows);
        }
      }
      c.commit();

      // Savepoints and rollback.
      try (Statement st = c.createStatement()) {
        st.executeUpdate("insert into " + t + " (id, name) values (9001, 'kept')");
        Savepoint sp = c.setSavepoint();
        st.executeUpdate("insert into " + t + " (id, name) values (9002, 'rolled back to savepoint')");
        c.rollback(sp);
        c.commit();
        st.executeUpdate("insert into " + t + " (id, name) values (9003, 'rolled back')");
        c.rollback();
      }
      c.setAutoCommit(true);
      try (Statement st = c.createStatement();
           ResultSet rs = st.executeQuery("select string_agg(id::text, ',' order by id) from " + t + " where id > 9000")) {
        rs.next();
        out("savepoints", rs.getString(1));
      }

      // An error, then the same connection goes on.
      try (Statement st = c.createStatement()) {
        try {
          st.executeQuery("select 1 / 0");
          out("error", "none");
        } catch (SQLException e) {
          out("error", e.getSQLState());
        }
        try (ResultSet rs = st.executeQuery("select 'after error'")) {
          rs.next();
          out("after error", rs.getString(1));
        }
      }

      // A bytea larger than the proxy's buffers, both ways; prepared often enough to be binary.
      byte[] big = new byte[300_000];
      new Random(42).nextBytes(big);
      try (PreparedStatement ins = c.prepareStatement("insert into " + t + "_blob values (?, ?)");
           PreparedStatement sel = c.prepareStatement("select data, md5(data), length(data) from " + t + "_blob where id = ?")) {
        for (int i = 0; i < 7; i++) {
          ins.setInt(1, i);
          ins.setBytes(2, Arrays.copyOf(big, big.length - i));
          ins.executeUpdate();
        }
        for (int i = 0; i < 7; i++) {
          sel.setInt(1, i);
          try (ResultSet rs = sel.executeQuery()) {
            rs.next();
            byte[] got = rs.getBytes(1);
            out("bytea " + i, md5(got) + " " + rs.getString(2) + " " + rs.getInt(3)
                + " same=" + Arrays.equals(got, Arrays.copyOf(big, big.length - i)));
          }
        }
      }

      // Metadata: what the driver learns from the catalogs.
      DatabaseMetaData md = c.getMetaData();
      out("product", md.getDatabaseProductName() + " " + md.getDatabaseMajorVersion());
      try (ResultSet rs = md.getColumns(null, "public", t, null)) {
        while (rs.next()) {
          out("column", rs.getString("COLUMN_NAME") + " " + rs.getString("TYPE_NAME") + " "
              + rs.getInt("DATA_TYPE") + " nullable=" + rs.getInt("NULLABLE"));
        }
      }
      try (ResultSet rs = md.getPrimaryKeys(null, "public", t)) {
        while (rs.next()) out("primary key", rs.getString("COLUMN_NAME"));
      }
      try (ResultSet rs = md.getTables(null, "public", t + "%", new String[] {"TABLE"})) {
        while (rs.next()) out("table", rs.getString("TABLE_NAME").substring(t.length()));
      }
      try (PreparedStatement ps = c.prepareStatement("select * from " + t + " where id = ?")) {
        ResultSetMetaData rmd = ps.getMetaData();
        for (int i = 1; i <= rmd.getColumnCount(); i++) {
          out("result column " + i, rmd.getColumnName(i) + " " + rmd.getColumnTypeName(i) + " "
              + rmd.getPrecision(i) + " " + rmd.getScale(i));
        }
      }
    }

    // Several connections at once: their server-side statements have the same names (S_1, ...)
    // for different queries.
    ExecutorService pool = Executors.newFixedThreadPool(4);
    List<Future<String>> results = new ArrayList<>();
    for (int k = 0; k < 4; k++) {
      final int client = k;
      results.add(pool.submit(() -> {
        StringBuilder sb = new StringBuilder();
        try (Connection c = connect()) {
          List<PreparedStatement> stmts = new ArrayList<>();
          for (int q = 0; q < 3; q++) {
            stmts.add(c.prepareStatement("select " + (client * 10 + (q + client) % 3) + " + ?::int"));
          }
          for (int round = 0; round < 10; round++) {
            for (PreparedStatement ps : stmts) {
              ps.setInt(1, round);
              try (ResultSet rs = ps.executeQuery()) {
                rs.next();
                sb.append(rs.getInt(1)).append(',');
              }
            }
          }
          for (PreparedStatement ps : stmts) ps.close();
        }
        return sb.toString();
      }));
    }
    for (int k = 0; k < 4; k++) out("client " + k, results.get(k).get(60, TimeUnit.SECONDS));
    pool.shutdown();

    try (Connection c = connect(); Statement st = c.createStatement()) {
      st.execute("drop table " + t + ", " + t + "_blob");
    }
    out("done", "ok");
  }
}
