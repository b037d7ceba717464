// BISMO-style bit-serial matrix multiplication overlay: top level.
//
// Three decoupled stages (fetch, execute, result), each fed by its own instruction queue that an
// instruction reader fills from a DRAM-resident instruction stream, synchronised by token
// counters: fetch->exec "filled" and exec->fetch "free" per operand side (LHS, RHS), and
// exec->result "result ready" / result->exec "result slot free". One DRAM read port (shared by the
// fetch stage and the three instruction readers, tagged by id) and one write port (result stage),
// both DW bits wide, in the harness's port convention (rtl/harness/README.md).
//
// Registers (32-bit word index):
//   0 ID 'BSMO'   1 CTRL (write bit0: start)   2 STATUS (bit0 done, bit1 busy)
//   3 CONFIG (rw): bit0 DP_EN, datapath enable (reset 1). Cleared, the operand buffers are neither
//     written nor read and the DPA does not compute, while the stages, tokens, DRAM traffic and
//     every counter run exactly as with it set: timing runs, whose cycles do not depend on operand
//     values, skip the work that dominates the simulation (as Bit Fusion's DP_EN).
//   4..9 DM, DN, DK, BM, BN, DW (read only)
//   16/17 fetch stream base/count, 18/19 exec stream, 20/21 result stream (instructions)
//   32.. 64-bit counters, low word at the even index, high word at the odd one (see CNT_* below);
//   all are cleared by start and frozen at done.
module bismo_top #(
    parameter int DM = 8,
    parameter int DN = 8,
    parameter int DK = 256,
    parameter int BM = 1024,
    parameter int BN = 1024,
    parameter int DW = 256
) (
    input  logic              clk,
    input  logic              rst,
    input  logic              reg_wr_en,
    input  logic [15:0]       reg_addr,
    input  logic [31:0]       reg_wdata,
    output logic [31:0]       reg_rdata,
    output logic              mem_rd_req_valid,
    input  logic              mem_rd_req_ready,
    output logic [31:0]       mem_rd_req_addr,
    output logic [7:0]        mem_rd_req_id,
    input  logic              mem_rd_rsp_valid,
    output logic              mem_rd_rsp_ready,
    input  logic [DW-1:0]     mem_rd_rsp_data,
    input  logic [7:0]        mem_rd_rsp_id,
    output logic              mem_wr_valid,
    input  logic              mem_wr_ready,
    output logic [31:0]       mem_wr_addr,
    output logic [DW-1:0]     mem_wr_data,
    output logic [DW/8-1:0]   mem_wr_strb,
    output logic              done
);
  localparam int LAW = $clog2(BM);
  localparam int RAW = $clog2(BN);
  localparam int NCNT = 16;
  // counter indices (register 32 + 2*index)
  localparam int CNT_TOTAL = 0;         // cycles from start to done
  localparam int CNT_FETCH_BUSY = 1;    // fetch has requests to issue or data in flight
  localparam int CNT_FETCH_TOK = 2;     // fetch instruction waiting for a "free" token
  localparam int CNT_EXEC_BUSY = 3;     // array busy: a word pair issued to the DPA
  localparam int CNT_EXEC_TOK = 4;      // exec instruction waiting for tokens
  localparam int CNT_EXEC_STARVED = 5;  // exec idle with instructions still to come
  localparam int CNT_RES_BUSY = 6;      // result stage writing a tile
  localparam int CNT_RES_TOK = 7;       // result instruction waiting for its tile
  localparam int CNT_RES_WSTALL = 8;    // result beat offered but not accepted (bandwidth)
  localparam int CNT_RD_BEATS = 9;      // DRAM read beats (operands + instructions)
  localparam int CNT_WR_BYTES = 10;     // DRAM bytes written
  localparam int CNT_INS_BEATS = 11;    // of the read beats: instruction beats
  localparam int CNT_LHS_WORDS = 12;    // LHS buffer words written
  localparam int CNT_RHS_WORDS = 13;    // RHS buffer words written
  localparam int CNT_FETCH_WAIT = 14;   // fetch busy but no data beat arrived (DRAM latency/bw)
  localparam int CNT_RES_TILES = 15;    // result tiles written

  // ---------------- registers ----------------
  logic [31:0] desc_base[3], desc_count[3];
  logic running, start, dp_en;
  logic [63:0] cnt[NCNT];
  assign start = reg_wr_en && reg_addr == 16'd1 && reg_wdata[0];

  wire [15:0] cnt_reg = (reg_addr - 16'd32) >> 1;
  wire [$clog2(NCNT)-1:0] cnt_sel = cnt_reg[$clog2(NCNT)-1:0];
  always_comb begin
    reg_rdata = 32'd0;
    if (reg_addr >= 16'd32 && reg_addr < 16'(32 + 2 * NCNT)) begin
      reg_rdata = reg_addr[0] ? cnt[cnt_sel][63:32] : cnt[cnt_sel][31:0];
    end else begin
      case (reg_addr)
        16'd0: reg_rdata = 32'h4253_4D4F;  // "BSMO"
        16'd2: reg_rdata = {30'd0, running, done};
        16'd3: reg_rdata = {31'd0, dp_en};
        16'd4: reg_rdata = DM;
        16'd5: reg_rdata = DN;
        16'd6: reg_rdata = DK;
        16'd7: reg_rdata = BM;
        16'd8: reg_rdata = BN;
        16'd9: reg_rdata = DW;
        16'd16: reg_rdata = desc_base[0];
        16'd17: reg_rdata = desc_count[0];
        16'd18: reg_rdata = desc_base[1];
        16'd19: reg_rdata = desc_count[1];
        16'd20: reg_rdata = desc_base[2];
        16'd21: reg_rdata = desc_count[2];
        default: reg_rdata = 32'd0;
      endcase
    end
  end

  always_ff @(posedge clk) begin
    if (rst) dp_en <= 1'b1;
    else if (reg_wr_en && reg_addr == 16'd3) dp_en <= reg_wdata[0];
  end

  always_ff @(posedge clk) begin
    if (reg_wr_en) begin
      case (reg_addr)
        16'd16: desc_base[0] <= reg_wdata;
        16'd17: desc_count[0] <= reg_wdata;
        16'd18: desc_base[1] <= reg_wdata;
        16'd19: desc_count[1] <= reg_wdata;
        16'd20: desc_base[2] <= reg_wdata;
        16'd21: desc_count[2] <= reg_wdata;
        default: ;
      endcase
    end
  end

  wire clr = rst || start;

  // ---------------- instruction readers (ids 1..3) ----------------
  logic [2:0] ir_req, ir_grant, ir_idle, q_valid, q_ready;
  logic [31:0] ir_addr[3];
  logic [127:0] q_ins[3];
  for (genvar s = 0; s < 3; s++) begin : g_ir
    bismo_instr_reader #(.DW(DW)) u_ir (
        .clk(clk), .clr(rst), .start(start), .base(desc_base[s]), .count(desc_count[s]),
        .req_valid(ir_req[s]), .req_grant(ir_grant[s]), .req_addr(ir_addr[s]),
        .rsp_valid(mem_rd_rsp_valid && mem_rd_rsp_id == 8'(s + 1)), .rsp_data(mem_rd_rsp_data),
        .ins_valid(q_valid[s]), .ins_ready(q_ready[s]), .ins(q_ins[s]), .idle(ir_idle[s])
    );
  end

  // ---------------- tokens ----------------
  // 0 LHS filled, 1 RHS filled (fetch->exec); 2 LHS free, 3 RHS free (exec->fetch);
  // 4 result ready (exec->result); 5 result slot free (result->exec)
  logic [15:0] tok[6];
  logic [5:0] tok_send, tok_take;
  always_ff @(posedge clk) begin
    for (int t = 0; t < 6; t++) begin
      if (clr) tok[t] <= '0;
      else tok[t] <= tok[t] + 16'(tok_send[t]) - 16'(tok_take[t]);
    end
  end

  // ---------------- fetch ----------------
  logic f_req, f_grant, f_idle, f_tok;
  logic [31:0] f_addr;
  logic [DM-1:0] lwe;
  logic [LAW-1:0] lwaddr;
  logic [DN-1:0] rwe;
  logic [7:0] l_words, r_words;  // words written this cycle (the counters')
  logic [RAW-1:0] rwaddr;
  logic [DK-1:0] f_word;
  wire f_rsp = mem_rd_rsp_valid && mem_rd_rsp_id == 8'd0;

  bismo_fetch #(.DM(DM), .DN(DN), .DK(DK), .DW(DW), .LAW(LAW), .RAW(RAW)) u_fetch (
      .clk(clk), .clr(clr), .ins_valid(q_valid[0]), .ins_ready(q_ready[0]), .ins(q_ins[0]),
      .free_l_avail(tok[2] != 0), .free_r_avail(tok[3] != 0),
      .free_l_take(tok_take[2]), .free_r_take(tok_take[3]),
      .fill_l_send(tok_send[0]), .fill_r_send(tok_send[1]),
      .req_valid(f_req), .req_grant(f_grant), .req_addr(f_addr),
      .rsp_valid(f_rsp), .rsp_data(mem_rd_rsp_data),
      .lwe(lwe), .lwaddr(lwaddr), .rwe(rwe), .rwaddr(rwaddr), .lwords(l_words), .rwords(r_words),
      .word(f_word),
      .idle(f_idle), .tok_stall(f_tok)
  );

  // read port arbitration: exec instructions first, then fetch and result instructions, then data
  always_comb begin
    ir_grant = '0;
    f_grant = 1'b0;
    mem_rd_req_valid = 1'b1;
    if (ir_req[1]) begin
      mem_rd_req_addr = ir_addr[1];
      mem_rd_req_id = 8'd2;
      ir_grant[1] = mem_rd_req_ready;
    end else if (ir_req[0]) begin
      mem_rd_req_addr = ir_addr[0];
      mem_rd_req_id = 8'd1;
      ir_grant[0] = mem_rd_req_ready;
    end else if (ir_req[2]) begin
      mem_rd_req_addr = ir_addr[2];
      mem_rd_req_id = 8'd3;
      ir_grant[2] = mem_rd_req_ready;
    end else begin
      mem_rd_req_addr = f_addr;
      mem_rd_req_id = 8'd0;
      mem_rd_req_valid = f_req;
      f_grant = f_req && mem_rd_req_ready;
    end
  end
  assign mem_rd_rsp_ready = 1'b1;  // every requester reserved room for its answers

  // ---------------- buffers ----------------
  // DM LHS and DN RHS memories of BM (BN) words of DK bits: one write (fetch) and one registered
  // read (execute) per cycle each. Written out here rather than as instances so that each write
  // takes its data straight from the DRAM beat.
  localparam bit WIDE = DW >= DK;
  localparam int R = WIDE ? DW / DK : 1;
  logic iss_valid;
  logic [LAW-1:0] laddr;
  logic [RAW-1:0] raddr;
  logic [DM-1:0][DK-1:0] lrdata;
  logic [DN-1:0][DK-1:0] rrdata;
  for (genvar i = 0; i < DM; i++) begin : g_lhs
    logic [DK-1:0] mem[BM];
    if (WIDE) begin : g_wr
      always_ff @(posedge clk) if (lwe[i] && dp_en) mem[lwaddr] <= mem_rd_rsp_data[(i%R)*DK+:DK];
    end else begin : g_wr
      always_ff @(posedge clk) if (lwe[i] && dp_en) mem[lwaddr] <= f_word;
    end
    always_ff @(posedge clk) if (iss_valid && dp_en) lrdata[i] <= mem[laddr];
  end
  for (genvar j = 0; j < DN; j++) begin : g_rhs
    logic [DK-1:0] mem[BN];
    if (WIDE) begin : g_wr
      always_ff @(posedge clk) if (rwe[j] && dp_en) mem[rwaddr] <= mem_rd_rsp_data[(j%R)*DK+:DK];
    end else begin : g_wr
      always_ff @(posedge clk) if (rwe[j] && dp_en) mem[rwaddr] <= f_word;
    end
    always_ff @(posedge clk) if (iss_valid && dp_en) rrdata[j] <= mem[raddr];
  end

  // ---------------- execute + DPA ----------------
  logic e_idle, e_tok, en1, en2, neg2, clr2, last2, slot2;
  logic [4:0] shift2;
  bismo_exec #(.LAW(LAW), .RAW(RAW)) u_exec (
      .clk(clk), .clr(clr), .ins_valid(q_valid[1]), .ins_ready(q_ready[1]), .ins(q_ins[1]),
      .fill_l_avail(tok[0] != 0), .fill_r_avail(tok[1] != 0), .res_free_avail(tok[5] != 0),
      .fill_l_take(tok_take[0]), .fill_r_take(tok_take[1]), .res_free_take(tok_take[5]),
      .free_l_send(tok_send[2]), .free_r_send(tok_send[3]), .res_full_send(tok_send[4]),
      .iss_valid(iss_valid), .laddr(laddr), .raddr(raddr),
      .en1(en1), .en2(en2), .shift2(shift2), .neg2(neg2), .clr2(clr2), .last2(last2), .slot2(slot2),
      .idle(e_idle), .tok_stall(e_tok)
  );

  logic [DM-1:0][DN-1:0][31:0] res0, res1;
  bismo_dpa #(.DM(DM), .DN(DN), .DK(DK)) u_dpa (
      .clk(clk), .en1(en1 && dp_en), .lhs(lrdata), .rhs(rrdata), .en2(en2 && dp_en), .shift(shift2), .neg(neg2),
      .clr(clr2), .last(last2), .slot(slot2), .res0(res0), .res1(res1)
  );

  // ---------------- result ----------------
  logic r_idle, r_tok;
  logic [15:0] r_bytes;
  bismo_result #(.DM(DM), .DN(DN), .DW(DW)) u_result (
      .clk(clk), .clr(clr), .ins_valid(q_valid[2]), .ins_ready(q_ready[2]), .ins(q_ins[2]),
      .res_full_avail(tok[4] != 0), .res_full_take(tok_take[4]), .res_free_send(tok_send[5]),
      .res0(res0), .res1(res1),
      .wr_valid(mem_wr_valid), .wr_ready(mem_wr_ready), .wr_addr(mem_wr_addr), .wr_data(mem_wr_data),
      .wr_strb(mem_wr_strb), .wr_bytes(r_bytes), .idle(r_idle), .tok_stall(r_tok)
  );

  // ---------------- run control and counters ----------------
  wire all_idle = &ir_idle && f_idle && e_idle && r_idle;
  wire rd_fire = mem_rd_req_valid && mem_rd_req_ready;
  wire [63:0] inc[NCNT];
  assign inc[CNT_TOTAL] = 64'd1;
  assign inc[CNT_FETCH_BUSY] = 64'(!f_idle);
  assign inc[CNT_FETCH_TOK] = 64'(f_tok);
  assign inc[CNT_EXEC_BUSY] = 64'(iss_valid);
  assign inc[CNT_EXEC_TOK] = 64'(e_tok);
  assign inc[CNT_EXEC_STARVED] = 64'(e_idle && !q_valid[1] && !ir_idle[1]);
  assign inc[CNT_RES_BUSY] = 64'(!r_idle);
  assign inc[CNT_RES_TOK] = 64'(r_tok);
  assign inc[CNT_RES_WSTALL] = 64'(mem_wr_valid && !mem_wr_ready);
  assign inc[CNT_RD_BEATS] = 64'(rd_fire);
  assign inc[CNT_WR_BYTES] = (mem_wr_valid && mem_wr_ready) ? 64'(r_bytes) : 64'd0;
  assign inc[CNT_INS_BEATS] = 64'(rd_fire && mem_rd_req_id != 8'd0);
  assign inc[CNT_LHS_WORDS] = 64'(l_words);
  assign inc[CNT_RHS_WORDS] = 64'(r_words);
  assign inc[CNT_FETCH_WAIT] = 64'(!f_idle && !f_rsp);
  assign inc[CNT_RES_TILES] = 64'(q_valid[2] && q_ready[2]);

  always_ff @(posedge clk) begin
    if (rst) begin
      running <= 1'b0;
      done <= 1'b0;
      for (int c = 0; c < NCNT; c++) cnt[c] <= '0;
    end else if (start) begin
      running <= 1'b1;
      done <= 1'b0;
      for (int c = 0; c < NCNT; c++) cnt[c] <= '0;
    end else if (running) begin
      for (int c = 0; c < NCNT; c++) cnt[c] <= cnt[c] + inc[c];
      if (all_idle) begin
        running <= 1'b0;
        done <= 1'b1;
      end
    end
  end
endmodule
