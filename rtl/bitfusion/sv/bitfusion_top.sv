// Bit Fusion accelerator top: register interface, block-ISA instruction decoder and block table,
// the three engines (load, compute, store), the datapath, and the RTL's own counters.
//
// Port convention of the shared native harness (rtl/harness/README.md): clk, rst, reg_* bus,
// mem_rd_* / mem_wr_* DRAM port with beat-aligned single-beat reads and strobed writes, done.
//
// Registers (32-bit word index):
//   0 ID 'BFUS' (ro)          1 CTRL (wo): bit0 start, bit1 clear program, bit2 abort (stops
//                             the engines; reads in flight must be dropped by the DRAM side)
//   2 CONFIG (rw): bit0 DP_EN (datapath enable; reset 1)
//   3 STATUS (ro): bit0 done, bit1 busy, bit2 error, [15:8] error code, [24:16] blocks loaded
//   4 INSTR_LO (wo)           5 INSTR_HI (wo; pushes the 64-bit instruction {HI, LO})
//   6 {M, N} (ro)  7 DRAM beat bytes (ro)  8 WBUF bytes  9 IBUF bytes  10 OBUF bytes  11 version
//   16 + 2i / 17 + 2i: 64-bit counter i, low / high word (see CNT_* below)
module bitfusion_top #(
    parameter int N = 16,              // rows of fusion units
    parameter int M = 32,              // columns
    parameter int DW = 192,            // DRAM beat bits
    parameter int WBUF_BYTES = 65536,  // both halves
    parameter int IBUF_BYTES = 32768,
    parameter int OBUF_BYTES = 16384,
    parameter int RDQ = 64             // DRAM reads in flight
) (
    input  logic          clk,
    input  logic          rst,
    input  logic          reg_wr_en,
    input  logic [15:0]   reg_addr,
    input  logic [31:0]   reg_wdata,
    output logic [31:0]   reg_rdata,
    output logic          mem_rd_req_valid,
    input  logic          mem_rd_req_ready,
    output logic [31:0]   mem_rd_req_addr,
    output logic [7:0]    mem_rd_req_id,
    input  logic          mem_rd_rsp_valid,
    output logic          mem_rd_rsp_ready,
    input  logic [DW-1:0] mem_rd_rsp_data,
    input  logic [7:0]    mem_rd_rsp_id,
    output logic          mem_wr_valid,
    input  logic          mem_wr_ready,
    output logic [31:0]   mem_wr_addr,
    output logic [DW-1:0] mem_wr_data,
    output logic [DW/8-1:0] mem_wr_strb,
    output logic          done
);
  import bf_pkg::*;

  localparam int DB = DW / 8;
  localparam int WB_HALF = WBUF_BYTES / (N * M * 2);
  localparam int IB_HALF = IBUF_BYTES / (N * 2);
  localparam int OB_ENT = OBUF_BYTES / (M * 4 * 2);
  localparam int QSZ = 1 << $clog2(2 * (4 * M + DB));

  // counters
  localparam int CNT_TOTAL = 0;       // start to done
  localparam int CNT_COMPUTE = 1;     // array cycles issued (busy, non-stalled)
  localparam int CNT_STALL_IN = 2;    // array waits for a WBUF / IBUF load
  localparam int CNT_STALL_OUT = 3;   // array waits for an OBUF half (store behind)
  localparam int CNT_TAIL = 4;        // after the last array cycle: drain + last store
  localparam int CNT_LOAD_BUSY = 5;   // load engine issuing reads or reads in flight
  localparam int CNT_LOAD_WAIT = 6;   // load engine waits for a free buffer half
  localparam int CNT_STORE_BUSY = 7;  // store engine busy with a tile
  localparam int CNT_RD_BEATS = 8;
  localparam int CNT_WR_BEATS = 9;
  localparam int CNT_RD_BYTES = 10;   // useful bytes read
  localparam int CNT_WR_BYTES = 11;   // bytes written (strobed)
  localparam int CNT_WBUF_RD = 12;    // bits
  localparam int CNT_WBUF_WR = 13;
  localparam int CNT_IBUF_RD = 14;
  localparam int CNT_IBUF_WR = 15;
  localparam int CNT_OBUF_RD = 16;
  localparam int CNT_OBUF_WR = 17;
  localparam int CNT_TILES = 18;      // output tiles stored
  localparam int CNT_SYNC_WAIT = 19;  // load engine waits at a layer barrier (SETUP sync)
  localparam int NCNT = 20;

  // ---------------------------------------------------------------- registers and control
  logic [31:0] instr_lo;
  logic dp_en;
  logic run, done_r;
  logic [7:0] err_code;
  logic [BW:0] nblocks;
  logic [NCNT-1:0][63:0] cnt;
  logic start_p, clear_p, abort_p;

  assign start_p = reg_wr_en && reg_addr == 16'd1 && reg_wdata[0];
  assign clear_p = reg_wr_en && reg_addr == 16'd1 && reg_wdata[1];
  assign abort_p = (reg_wr_en && reg_addr == 16'd1 && reg_wdata[2]) || (run && err_code != ERR_NONE);
  wire push_p = reg_wr_en && reg_addr == 16'd5;
  wire [63:0] instr = {reg_wdata, instr_lo};
  assign done = done_r;

  always_comb begin
    reg_rdata = 32'd0;
    if (reg_addr >= 16'd16 && reg_addr < 16'(16 + 2 * NCNT)) begin
      logic [15:0] k;
      k = reg_addr - 16'd16;
      reg_rdata = k[0] ? cnt[k[5:1]][63:32] : cnt[k[5:1]][31:0];
    end else begin
      case (reg_addr)
        16'd0: reg_rdata = 32'h4246_5553;
        16'd2: reg_rdata = {31'd0, dp_en};
        16'd3: reg_rdata = {(15-BW)'(0), nblocks, err_code, 5'd0, err_code != ERR_NONE, run, done_r};
        16'd6: reg_rdata = {16'(M), 16'(N)};
        16'd7: reg_rdata = 32'(DB);
        16'd8: reg_rdata = 32'(WBUF_BYTES);
        16'd9: reg_rdata = 32'(IBUF_BYTES);
        16'd10: reg_rdata = 32'(OBUF_BYTES);
        16'd11: reg_rdata = 32'd1;
        default: reg_rdata = 32'd0;
      endcase
    end
  end

  // ---------------------------------------------------------------- block table (decoded ISA)
  // Instructions are decoded into a staging block; BLOCK_END copies it into the table. (Each wide
  // register is written from one always_ff of its own, which keeps Verilator free of shadow copies.)
  block_t stg;
  block_t tbl[MAXB];
  localparam block_t BLOCK_DEFAULT = block_default(4'($clog2(N)));
  wire decode = push_p && !run && nblocks < (BW+1)'(MAXB);
  wire end_p = decode && instr[63:60] == OP_END;

  always_ff @(posedge clk) if (end_p) tbl[nblocks[BW-1:0]] <= stg;

  always_ff @(posedge clk) begin
    if (rst || clear_p) nblocks <= '0;
    else if (end_p) nblocks <= nblocks + 1'b1;
    if (reg_wr_en && reg_addr == 16'd4) instr_lo <= reg_wdata;
  end

  always_ff @(posedge clk) begin
    if (rst || clear_p || end_p) begin
      stg <= BLOCK_DEFAULT;
    end else if (decode) begin
      logic [1:0] x, xx;
      logic [2:0] lv;
      x = instr[55:54];
      xx = instr[57:56];
      lv = instr[58:56];
      case (instr[63:60])
        OP_SETUP: begin
          stg.a_sel <= instr[1:0];
          stg.w_sel <= instr[3:2];
          stg.a_signed <= instr[4];
          stg.w_signed <= instr[5];
          stg.o_sel <= instr[8:6];
          stg.o_signed <= instr[9];
          stg.o_shift <= instr[14:10];
          stg.irows <= instr[18:15];
          stg.sync <= instr[19];
          stg.fcfg <= FUSE_TABLE[((32'(instr[1:0]) * 3 + 32'(instr[3:2])) * 2 + 32'(instr[4])) * 2 +
                                 32'(instr[5])];
        end
        OP_LOOP: begin
          if (instr[59]) begin
            stg.ibound[lv] <= instr[15:0];
            stg.ired[lv] <= instr[55];
          end else begin
            stg.obound[lv] <= instr[15:0];
            stg.ored[lv] <= instr[55];
          end
        end
        OP_BSTRIDE: begin
          if (instr[59]) stg.si[x][lv] <= instr[31:0];
          else stg.so[x][lv] <= instr[31:0];
        end
        OP_XFER: begin
          case (instr[54:50])
            XF_BASE: stg.xf[xx].base <= instr[31:0];
            XF_LEN: stg.xf[xx].len <= instr[31:0];
            XF_N1: stg.xf[xx].n1 <= instr[31:0];
            XF_S1: stg.xf[xx].s1 <= instr[31:0];
            XF_N2: stg.xf[xx].n2 <= instr[31:0];
            XF_S2: stg.xf[xx].s2 <= instr[31:0];
            XF_N3: stg.xf[xx].n3 <= instr[31:0];
            XF_S3: stg.xf[xx].s3 <= instr[31:0];
            XF_LEVEL: stg.xf[xx].lvl <= instr[2:0];
            XF_ENTRIES: stg.entries <= instr[31:0];
            default: if (instr[54]) stg.xf[xx].ds[instr[52:50]] <= instr[31:0];
          endcase
        end
        default: ;
      endcase
    end
  end

  // ---------------------------------------------------------------- engines
  block_t c_cur;
  logic [31:0] w_loaded, i_loaded, w_freed, i_freed, o_stored, o_done, o_pushed;
  logic iss_valid, iss_hi, iss_hw, iss_ho, iss_first, iss_tile_last, tile_done;
  logic [31:0] iss_ai, iss_aw, iss_ao;
  logic st_push, st_push_half;
  logic [31:0] st_push_addr;
  logic [BW-1:0] st_push_blk;
  logic [BW-1:0] c_blk;
  logic l_sync;
  logic c_finished, c_stall_in, c_stall_out;
  logic l_finished, l_busy, l_wait, rd_beat;
  logic [5:0] rsp_bytes, wr_bytes;
  logic s_busy, s_idle, wr_beat;
  logic [7:0] c_err, l_err, s_err, d_err;
  logic ld_valid, ld_tgt, ld_half;
  logic [31:0] ld_q0;
  logic [5:0] ld_lo, ld_n;
  logic [1:0] ld_rl;
  logic [4:0] ld_lr;
  logic st_rd, st_half;
  logic [31:0] st_addr;
  logic [M-1:0][31:0] st_data;

  // every output tile pushed so far is in DRAM (writes are visible once accepted): a block with
  // `sync` may then read what the blocks before it wrote
  wire stores_drained = !st_push && (o_stored == o_pushed);

  wire [1:0] c_rl_w = 2'd2 - c_cur.a_sel;  // weight word bytes = 8 / abits'
  wire [1:0] c_rl_i = 2'd2 - c_cur.w_sel;  // activation word bytes = 8 / wbits'

  bf_compute #(.IB_HALF(IB_HALF), .WB_HALF(WB_HALF), .OB_ENT(OB_ENT)) u_compute (
      .clk, .rst, .start(start_p), .abort(abort_p), .nblocks, .tbl, .cur(c_cur),
      .w_loaded, .i_loaded, .o_stored, .w_freed, .i_freed,
      .iss_valid, .iss_ai, .iss_aw, .iss_ao, .iss_hi, .iss_hw, .iss_ho, .iss_first, .iss_tile_last,
      .st_push, .st_half(st_push_half), .st_addr(st_push_addr), .st_blk(st_push_blk), .blk(c_blk),
      .finished(c_finished), .stall_in(c_stall_in), .stall_out(c_stall_out), .err(c_err));

  bf_load #(.DB(DB), .RDQ(RDQ), .W_CAP(WB_HALF * N * M), .I_CAP(IB_HALF * N),
            .LNM($clog2(N * M))) u_load (
      .clk, .rst, .start(start_p), .abort(abort_p), .nblocks, .tbl,
      .w_freed, .i_freed, .w_loaded, .i_loaded, .c_blk, .drained(stores_drained),
      .mem_rd_req_valid, .mem_rd_req_ready, .mem_rd_req_addr, .mem_rd_rsp_valid, .mem_rd_rsp_ready,
      .ld_valid, .ld_tgt, .ld_half, .ld_q0, .ld_lo, .ld_n, .ld_rl, .ld_lr,
      .finished(l_finished), .busy(l_busy), .wait_half(l_wait), .wait_sync(l_sync), .rd_beat, .rsp_bytes,
      .err(l_err));
  assign mem_rd_req_id = 8'd0;

  bf_store #(.M(M), .DB(DB), .OB_ENT(OB_ENT), .QSZ(QSZ)) u_store (
      .clk, .rst, .start(start_p), .abort(abort_p), .dp_en, .tbl,
      .push(st_push), .push_half(st_push_half), .push_addr(st_push_addr), .push_blk(st_push_blk),
      .o_done, .o_stored, .idle(s_idle),
      .st_rd, .st_half, .st_addr, .st_data,
      .mem_wr_valid, .mem_wr_ready, .mem_wr_addr, .mem_wr_data, .mem_wr_strb,
      .busy(s_busy), .wr_beat, .wr_bytes, .err(s_err));

  bf_datapath #(.N(N), .M(M), .DB(DB), .WB_HALF(WB_HALF), .IB_HALF(IB_HALF), .OB_ENT(OB_ENT)) u_dp (
      .clk, .rst, .dp_en, .cfg(c_cur.fcfg), .rl_w(c_rl_w), .rl_i(c_rl_i),
      .iss_valid, .iss_ai, .iss_aw, .iss_ao, .iss_hi, .iss_hw, .iss_ho, .iss_first, .iss_tile_last,
      .tile_done,
      .ld_valid, .ld_tgt, .ld_half, .ld_q0, .ld_lo, .ld_n, .ld_rl, .ld_lr, .ld_data(mem_rd_rsp_data),
      .st_rd, .st_half, .st_addr, .st_data, .err(d_err));

  // ---------------------------------------------------------------- run control and counters
  wire all_done = c_finished && l_finished && s_idle && !st_push && (o_stored == o_pushed);
  wire [7:0] any_err = (c_err != ERR_NONE) ? c_err : (l_err != ERR_NONE) ? l_err :
                       (s_err != ERR_NONE) ? s_err : d_err;

  // counters: the next values are computed in one place and assigned whole (one update per cycle)
  logic [NCNT-1:0][63:0] cnt_n;
  always_comb begin
    cnt_n = cnt;
    cnt_n[CNT_TOTAL] = cnt[CNT_TOTAL] + 64'd1;
    if (iss_valid) begin
      cnt_n[CNT_COMPUTE] = cnt[CNT_COMPUTE] + 64'd1;
      cnt_n[CNT_WBUF_RD] = cnt[CNT_WBUF_RD] + 64'(N * M * 8) * (64'd1 << c_rl_w);
      cnt_n[CNT_IBUF_RD] = cnt[CNT_IBUF_RD] + 64'(N * 8) * (64'd1 << c_rl_i);
      cnt_n[CNT_OBUF_WR] = cnt[CNT_OBUF_WR] + 64'(M * 32);
    end
    if ((iss_valid && !iss_first) || st_rd)
      cnt_n[CNT_OBUF_RD] = cnt[CNT_OBUF_RD] + ((iss_valid && !iss_first && st_rd) ? 64'(2 * M * 32) : 64'(M * 32));
    if (c_stall_in) cnt_n[CNT_STALL_IN] = cnt[CNT_STALL_IN] + 64'd1;
    if (c_stall_out) cnt_n[CNT_STALL_OUT] = cnt[CNT_STALL_OUT] + 64'd1;
    if (c_finished) cnt_n[CNT_TAIL] = cnt[CNT_TAIL] + 64'd1;
    if (l_busy) cnt_n[CNT_LOAD_BUSY] = cnt[CNT_LOAD_BUSY] + 64'd1;
    if (l_wait) cnt_n[CNT_LOAD_WAIT] = cnt[CNT_LOAD_WAIT] + 64'd1;
    if (l_sync) cnt_n[CNT_SYNC_WAIT] = cnt[CNT_SYNC_WAIT] + 64'd1;
    if (s_busy) cnt_n[CNT_STORE_BUSY] = cnt[CNT_STORE_BUSY] + 64'd1;
    if (rd_beat) cnt_n[CNT_RD_BEATS] = cnt[CNT_RD_BEATS] + 64'd1;
    if (wr_beat) cnt_n[CNT_WR_BEATS] = cnt[CNT_WR_BEATS] + 64'd1;
    if (rsp_bytes != 0) begin
      cnt_n[CNT_RD_BYTES] = cnt[CNT_RD_BYTES] + 64'(rsp_bytes);
      if (ld_tgt) cnt_n[CNT_IBUF_WR] = cnt[CNT_IBUF_WR] + 64'(rsp_bytes) * 64'd8;
      else cnt_n[CNT_WBUF_WR] = cnt[CNT_WBUF_WR] + 64'(rsp_bytes) * 64'd8;
    end
    if (wr_bytes != 0) cnt_n[CNT_WR_BYTES] = cnt[CNT_WR_BYTES] + 64'(wr_bytes);
    cnt_n[CNT_TILES] = 64'(o_stored);
  end

  always_ff @(posedge clk) begin
    if (rst || start_p) cnt <= '0;
    else if (run) cnt <= cnt_n;
  end

  always_ff @(posedge clk) begin
    if (rst) begin
      dp_en <= 1'b1;
      run <= 1'b0;
      done_r <= 1'b0;
      err_code <= ERR_NONE;
      o_done <= '0;
      o_pushed <= '0;
    end else begin
      if (reg_wr_en && reg_addr == 16'd2) dp_en <= reg_wdata[0];
      if (push_p && (run || nblocks >= (BW+1)'(MAXB))) err_code <= ERR_PROGRAM;
      if (push_p && !run && !(instr[63:60] inside {OP_NOP, OP_SETUP, OP_LOOP, OP_BSTRIDE, OP_XFER, OP_END}))
        err_code <= ERR_OPCODE;
      if (clear_p) err_code <= ERR_NONE;
      if (reg_wr_en && reg_addr == 16'd1 && reg_wdata[2]) run <= 1'b0;  // abort: stop, no done
      if (start_p) begin
        run <= 1'b1;
        done_r <= 1'b0;
        o_done <= '0;
        o_pushed <= '0;
        if (nblocks == '0) err_code <= ERR_PROGRAM;
      end else if (run) begin
        if (any_err != ERR_NONE && err_code == ERR_NONE) err_code <= any_err;
        if (tile_done) o_done <= o_done + 32'd1;
        if (st_push) o_pushed <= o_pushed + 32'd1;
        if (all_done || any_err != ERR_NONE || err_code != ERR_NONE) begin
          run <= 1'b0;
          done_r <= 1'b1;
        end
      end
    end
  end
endmodule
