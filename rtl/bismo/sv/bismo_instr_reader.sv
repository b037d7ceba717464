// Streams one stage's 128-bit instructions from DRAM into its instruction queue.
// DW >= IW: a beat carries DW/IW instructions; DW < IW: IW/DW beats make one instruction.
// Reads are only requested when the beat queue has room for their answers, so the response
// channel never has to wait.
module bismo_instr_reader #(
    parameter int DW = 256,
    parameter int IW = 128,
    parameter int QBEATS = 4
) (
    input  logic          clk,
    input  logic          clr,
    input  logic          start,
    input  logic [31:0]   base,
    input  logic [31:0]   count,     // instructions
    output logic          req_valid,
    input  logic          req_grant,
    output logic [31:0]   req_addr,
    input  logic          rsp_valid,
    input  logic [DW-1:0] rsp_data,
    output logic          ins_valid,
    input  logic          ins_ready,
    output logic [IW-1:0] ins,
    output logic          idle       // every instruction handed to the stage
);
  localparam int BYTES = DW / 8;
  localparam bit WIDE = DW >= IW;
  localparam int PER = WIDE ? DW / IW : 1;
  localparam int G = WIDE ? 1 : IW / DW;
  localparam int QW = $clog2(QBEATS);

  logic [31:0] beats_left, ins_left;
  logic [QW:0] credits;  // beats requested and not yet consumed
  logic q_valid, q_pop;
  logic [DW-1:0] q_data;
  logic [QW:0] q_count;
  logic q_in_ready;  // always true: reads are only issued with room reserved

  bismo_fifo #(.W(DW), .DEPTH(QBEATS), .WIDE_WRITE(1'b1)) u_q (
      .clk(clk), .clr(clr || start), .in_valid(rsp_valid), .in_ready(q_in_ready), .in_data(rsp_data),
      .out_valid(q_valid), .out_ready(q_pop), .out_data(q_data), .count(q_count)
  );

  assign req_valid = beats_left != 0 && credits != (QW + 1)'(QBEATS);
  assign idle = ins_left == 0;
  wire ins_fire = ins_valid && ins_ready;

  if (WIDE) begin : g_wide
    localparam int SW = PER > 1 ? $clog2(PER) : 1;
    logic [SW-1:0] sel;
    assign ins = q_data[sel*IW+:IW];
    assign ins_valid = q_valid && ins_left != 0;
    assign q_pop = ins_fire && (32'(sel) == PER - 1 || ins_left == 1);
    always_ff @(posedge clk) begin
      if (clr || start) sel <= '0;
      else if (ins_fire) sel <= q_pop ? '0 : sel + 1'b1;
    end
  end else begin : g_narrow
    localparam int GW = $clog2(G);
    logic [IW-1:0] asm_q;
    logic [GW-1:0] g;
    logic full;
    assign ins = asm_q;
    assign ins_valid = full;
    assign q_pop = q_valid && !full;
    always_ff @(posedge clk) begin
      if (clr || start) begin
        g <= '0;
        full <= 1'b0;
      end else begin
        if (q_pop) begin
          asm_q[g*DW+:DW] <= q_data;
          g <= g + 1'b1;
          if (32'(g) == G - 1) full <= 1'b1;
        end
        if (ins_fire) begin
          full <= 1'b0;
          g <= '0;
        end
      end
    end
  end

  always_ff @(posedge clk) begin
    if (clr) begin
      beats_left <= '0;
      ins_left <= '0;
      credits <= '0;
    end else if (start) begin
      beats_left <= WIDE ? (count + PER - 1) / PER : count * G;
      ins_left <= count;
      req_addr <= base;
      credits <= '0;
    end else begin
      if (req_valid && req_grant) begin
        beats_left <= beats_left - 1;
        req_addr <= req_addr + BYTES;
      end
      if (ins_fire) ins_left <= ins_left - 1;
      credits <= credits + (QW + 1)'(req_valid && req_grant) - (QW + 1)'(q_pop);
    end
  end
endmodule
