// Store engine: writes finished output tiles from the OBUF half to DRAM. Each OBUF entry (one
// value per column) is requantized (arithmetic shift, saturation to the output width) and packed
// into M * obits / 8 bytes of a byte queue; the queue drains as beat-aligned, byte-strobed write
// beats over the ST transfer's n3 x n2 x n1 bursts (same pattern as a LD). When the last beat of a
// tile is accepted its OBUF half is free again.
module bf_store #(
    parameter int M = 32,
    parameter int DB = 24,
    parameter int OB_ENT = 64,
    parameter int QSZ = 512  // byte queue, a power of 2 >= 2 * (4 * M + DB)
) (
    input  logic clk,
    input  logic rst,
    input  logic start,
    input  logic abort,
    input  logic dp_en,
    input  bf_pkg::block_t tbl[bf_pkg::MAXB],
    // ST descriptors (from the compute controller)
    input  logic        push,
    input  logic        push_half,
    input  logic [31:0] push_addr,
    input  logic [bf_pkg::BW-1:0] push_blk,
    input  logic [31:0] o_done,    // tiles whose last accumulate reached the OBUF
    output logic [31:0] o_stored,
    output logic        idle,      // no tile queued or being stored
    // OBUF read port
    output logic        st_rd,
    output logic        st_half,
    output logic [31:0] st_addr,
    input  logic [M-1:0][31:0] st_data,
    // DRAM write port
    output logic            mem_wr_valid,
    input  logic            mem_wr_ready,
    output logic [31:0]     mem_wr_addr,
    output logic [DB*8-1:0] mem_wr_data,
    output logic [DB-1:0]   mem_wr_strb,
    // status
    output logic busy,
    output logic wr_beat,
    output logic [5:0] wr_bytes,   // valid bytes of the beat accepted this cycle
    output logic [7:0] err
);
  /*verilator inline_module*/
  import bf_pkg::*;

  localparam int QB = $clog2(QSZ);

  logic        d_half[4];
  logic [31:0] d_addr[4];
  logic [BW-1:0] d_blk[4];
  logic [2:0]  d_wp, d_rp;
  wire d_empty = (d_wp == d_rp);

  block_t cur;               // the block of the tile being stored
  xfer_t xf;
  assign xf = cur.xf[2];
  logic loading;             // cur is being loaded for the next tile
  logic active;              // a tile is being stored
  logic [31:0] e;            // next OBUF entry to read
  logic pend;                // a read is in flight (data next cycle)
  logic [7:0] q[QSZ];
  logic [QB:0] q_wp, q_rp;   // byte queue
  logic [31:0] i1, i2, i3, ba, be;
  logic [5:0] lo0, hi_l;
  logic fb, bursts_done;
  logic [5:0] beat_n;

  wire [5:0] obits = obits_of(cur.o_sel);
  wire [31:0] eb = (32'(M) * 32'(obits)) >> 3;  // bytes per entry
  wire [QB:0] q_cnt = q_wp - q_rp;
  wire [QB:0] q_free = (QB+1)'(QSZ) - q_cnt;

  assign idle = d_empty && !active && !loading;
  assign busy = active;

  // reader: one OBUF entry per cycle while the queue has room for it (and one in flight)
  assign st_rd = active && (e < cur.entries) && (32'(q_free) >= eb * (pend ? 32'd2 : 32'd1));
  assign st_half = d_half[d_rp[1:0]];
  assign st_addr = e;

  // the beat about to be formed
  wire [5:0] b_lo = fb ? lo0 : 6'd0;
  wire [5:0] b_hi = (ba == be) ? hi_l : 6'(DB);
  wire [5:0] b_n = b_hi - b_lo;
  wire can_form = active && !bursts_done && (32'(q_cnt) >= 32'(b_n)) && (!mem_wr_valid || mem_wr_ready);

  assign wr_beat = mem_wr_valid && mem_wr_ready;
  assign wr_bytes = wr_beat ? beat_n : 6'd0;

  // next tile: once its last accumulate is in the OBUF, fetch its block (own always_ff), then set up
  wire fetch = !active && !loading && !d_empty && o_done > o_stored;
  always_ff @(posedge clk) if (fetch) cur <= tbl[d_blk[d_rp[1:0]]];

  task automatic setup_burst(input logic [31:0] xb, input logic [31:0] j3, input logic [31:0] j2,
                             input logic [31:0] j1);
    logic [31:0] a, ee;
    a = xb + j3 * xf.s3 + j2 * xf.s2 + j1 * xf.s1;
    ee = a + xf.len - 32'd1;
    ba <= (a / DB) * DB;
    be <= (ee / DB) * DB;
    lo0 <= 6'(a % DB);
    hi_l <= 6'(ee % DB + 1);
    fb <= 1'b1;
  endtask

  always_ff @(posedge clk) begin
    if (rst || abort || start) begin
      d_wp <= '0;
      d_rp <= '0;
      loading <= 1'b0;
      active <= 1'b0;
      pend <= 1'b0;
      q_wp <= '0;
      q_rp <= '0;
      mem_wr_valid <= 1'b0;
      o_stored <= '0;
      err <= ERR_NONE;
    end else begin
      err <= ERR_NONE;
      if (push) begin
        d_half[d_wp[1:0]] <= push_half;
        d_addr[d_wp[1:0]] <= push_addr;
        d_blk[d_wp[1:0]] <= push_blk;
        d_wp <= d_wp + 3'd1;
      end
      if (fetch) loading <= 1'b1;
      if (loading) begin
        loading <= 1'b0;
        if (cur.entries == 0 || cur.entries > 32'(OB_ENT) || xf.len == 0 || xf.n1 == 0 || xf.n2 == 0 ||
            xf.n3 == 0 || cur.entries * eb != xf.len * xf.n1 * xf.n2 * xf.n3 ||
            (32'(M) * 32'(obits)) % 8 != 0) begin
          err <= ERR_STORE;
        end else begin
          active <= 1'b1;
          e <= '0;
          i1 <= '0;
          i2 <= '0;
          i3 <= '0;
          bursts_done <= 1'b0;
          setup_burst(d_addr[d_rp[1:0]], 32'd0, 32'd0, 32'd0);
        end
      end
      // reader
      pend <= st_rd;
      if (st_rd) e <= e + 32'd1;
      if (pend && dp_en) begin
        logic [M*32-1:0] packed_v;
        packed_v = '0;
        for (int c = 0; c < M; c++) begin
          /*verilator unroll_disable*/
          packed_v[c*int'(obits)+:32] = packed_v[c*int'(obits)+:32] |
              (requant(st_data[c], cur.o_shift, obits, cur.o_signed) &
               ((obits >= 6'd32) ? 32'hFFFF_FFFF : ((32'd1 << obits) - 32'd1)));
        end
        for (int k = 0; k < 4 * M; k++) begin
          /*verilator unroll_disable*/
          if (32'(k) < eb) begin
            logic [QB:0] ix;
            ix = q_wp + (QB+1)'(k);
            q[ix[QB-1:0]] <= packed_v[8*k+:8];
          end
        end
      end
      // writer: form the next beat from the queue
      if (wr_beat) mem_wr_valid <= 1'b0;
      if (can_form) begin
        mem_wr_valid <= 1'b1;
        mem_wr_addr <= ba;
        beat_n <= b_n;
        for (int l = 0; l < DB; l++) begin
          mem_wr_strb[l] <= (6'(l) >= b_lo) && (6'(l) < b_hi);
          if (dp_en) begin
            logic [QB:0] ix;
            ix = q_rp + (QB+1)'(l) - (QB+1)'(b_lo);
            mem_wr_data[8*l+:8] <= q[ix[QB-1:0]];
          end
        end
        fb <= 1'b0;
        if (ba != be) begin
          ba <= ba + 32'(DB);
        end else if (i1 != xf.n1 - 32'd1) begin
          i1 <= i1 + 32'd1;
          setup_burst(d_addr[d_rp[1:0]], i3, i2, i1 + 32'd1);
        end else if (i2 != xf.n2 - 32'd1) begin
          i1 <= '0;
          i2 <= i2 + 32'd1;
          setup_burst(d_addr[d_rp[1:0]], i3, i2 + 32'd1, 32'd0);
        end else if (i3 != xf.n3 - 32'd1) begin
          i1 <= '0;
          i2 <= '0;
          i3 <= i3 + 32'd1;
          setup_burst(d_addr[d_rp[1:0]], i3 + 32'd1, 32'd0, 32'd0);
        end else begin
          bursts_done <= 1'b1;
        end
      end
      // queue pointers: pushes of a finished read, pops of a formed beat
      q_wp <= q_wp + (pend ? (QB+1)'(eb) : '0);
      q_rp <= q_rp + (can_form ? (QB+1)'(b_n) : '0);
      // tile finished: every entry read, every beat accepted
      if (active && bursts_done && !mem_wr_valid && !pend && e == cur.entries) begin
        active <= 1'b0;
        o_stored <= o_stored + 32'd1;
        d_rp <= d_rp + 3'd1;
      end
    end
  end
endmodule
