// Synchronous show-ahead FIFO. DEPTH must be a power of two >= 2.
//
// WIDE_WRITE: the entry is written with a blocking assignment. Verilator gives a nonblocking write
// of a wide memory entry a W-bit staging local that it zeroes on every cycle, written or not (the
// instruction readers' 1024-bit beats on bismo-cloud: ~6 % of a cycle; issue 19). Nothing can tell the
// two apart: the entry written is never the one shown at out_data while out_valid is high (a write
// needs a free entry, so wp != rp whenever the FIFO holds data), and the memory is read nowhere else.
module bismo_fifo #(
    parameter int W = 32,
    parameter int DEPTH = 4,
    parameter bit WIDE_WRITE = 1'b0
) (
    input  logic                    clk,
    input  logic                    clr,
    input  logic                    in_valid,
    output logic                    in_ready,
    input  logic [W-1:0]            in_data,
    output logic                    out_valid,
    input  logic                    out_ready,
    output logic [W-1:0]            out_data,
    output logic [$clog2(DEPTH):0]  count
);
  localparam int AW = $clog2(DEPTH);
  logic [W-1:0] mem[DEPTH];
  logic [AW:0] wp, rp;

  assign count = wp - rp;
  assign in_ready = count != (AW + 1)'(DEPTH);
  assign out_valid = count != '0;
  assign out_data = mem[rp[AW-1:0]];

  always_ff @(posedge clk) begin
    if (clr) begin
      wp <= '0;
      rp <= '0;
    end else begin
      if (in_valid && in_ready) begin
        /* verilator lint_off BLKSEQ */
        if (WIDE_WRITE) mem[wp[AW-1:0]] = in_data;
        else mem[wp[AW-1:0]] <= in_data;
        /* verilator lint_on BLKSEQ */
        wp <= wp + 1'b1;
      end
      if (out_valid && out_ready) rp <= rp + 1'b1;
    end
  end
endmodule
