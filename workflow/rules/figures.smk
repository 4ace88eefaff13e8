# The paper's tables and figures, each redrawn from aggregated tables alone (restyling never
# reruns training), and claims.md. Every output is in the report (snakemake --report).


rule table1:
    input:
        runs="results/summary/table1/runs.csv",
    output:
        tex="paper_figures/table1.tex",
        csv=report("paper_figures/table1.csv", caption="../report/table1.rst", category="Tables"),
    log:
        "logs/paper_figures/table1.log",
    benchmark:
        "results/benchmarks/paper_figures/table1.tsv"
    params:
        options=report_options(),
    conda:
        "../../environment.yml"
    shell:
        "python -m icepick table table1 --runs {input.runs} --out {output.tex}"
        " --csv-out {output.csv} {params.options} > {log} 2>&1"


rule table_time_savings:
    input:
        runs="results/summary/fig3/runs.csv",
    output:
        tex="paper_figures/table_time_savings.tex",
        csv=report("paper_figures/table_time_savings.csv", caption="../report/time_savings.rst", category="Tables"),
    log:
        "logs/paper_figures/table_time_savings.log",
    benchmark:
        "results/benchmarks/paper_figures/table_time_savings.tsv"
    params:
        options=report_options(),
    conda:
        "../../environment.yml"
    shell:
        "python -m icepick table time-savings --runs {input.runs} --out {output.tex}"
        " --csv-out {output.csv} {params.options} > {log} 2>&1"


rule fig2_weight_shift:
    input:
        "results/summary/weight_shift.csv",
    output:
        pdf="paper_figures/fig2_weight_shift.pdf",
        png=report("paper_figures/fig2_weight_shift.png", caption="../report/fig2.rst", category="Figures"),
    log:
        "logs/paper_figures/fig2_weight_shift.log",
    benchmark:
        "results/benchmarks/paper_figures/fig2_weight_shift.tsv"
    params:
        options=report_options(),
    conda:
        "../../environment.yml"
    shell:
        "python -m icepick figure weight-shift --weight-shift {input} --out {output.pdf}"
        " --png {output.png} {params.options} > {log} 2>&1"


rule fig3_accuracy:
    input:
        runs="results/summary/fig3/runs.csv",
        steps="results/summary/fig3/steps.csv",
    output:
        pdf="paper_figures/fig3_accuracy.pdf",
        png=report("paper_figures/fig3_accuracy.png", caption="../report/fig3.rst", category="Figures"),
    log:
        "logs/paper_figures/fig3_accuracy.log",
    benchmark:
        "results/benchmarks/paper_figures/fig3_accuracy.tsv"
    params:
        options=report_options(),
    conda:
        "../../environment.yml"
    shell:
        "python -m icepick figure accuracy --runs {input.runs} --steps {input.steps}"
        " --out {output.pdf} --png {output.png} {params.options} > {log} 2>&1"


rule fig_thresholds:
    input:
        runs="results/summary/thresholds/runs.csv",
    output:
        pdf="paper_figures/fig_thresholds.pdf",
        png=report("paper_figures/fig_thresholds.png", caption="../report/thresholds.rst", category="Figures"),
    log:
        "logs/paper_figures/fig_thresholds.log",
    benchmark:
        "results/benchmarks/paper_figures/fig_thresholds.tsv"
    params:
        options=report_options(),
    conda:
        "../../environment.yml"
    shell:
        "python -m icepick figure thresholds --runs {input.runs} --out {output.pdf}"
        " --png {output.png} {params.options} > {log} 2>&1"


rule fig_lr_schedule:
    output:
        pdf="paper_figures/fig_lr_schedule.pdf",
        png=report("paper_figures/fig_lr_schedule.png", caption="../report/lr_schedule.rst", category="Figures"),
    log:
        "logs/paper_figures/fig_lr_schedule.log",
    benchmark:
        "results/benchmarks/paper_figures/fig_lr_schedule.tsv"
    params:
        base=config["schedule"]["base"],
        delta=config["schedule"]["delta"],
        p=config["schedule"]["p"],
        beta=config["schedule"]["beta"],
    conda:
        "../../environment.yml"
    shell:
        "python -m icepick figure lr-schedule --base {params.base} --delta {params.delta} --p {params.p}"
        " --beta {params.beta} --out {output.pdf} --png {output.png} > {log} 2>&1"


rule fig_ablation:
    input:
        runs="results/summary/ablation/runs.csv",
    output:
        pdf="paper_figures/fig_ablation.pdf",
        png=report("paper_figures/fig_ablation.png", caption="../report/ablation.rst", category="Figures"),
    log:
        "logs/paper_figures/fig_ablation.log",
    benchmark:
        "results/benchmarks/paper_figures/fig_ablation.tsv"
    params:
        options=report_options(),
    conda:
        "../../environment.yml"
    shell:
        "python -m icepick figure ablation --runs {input.runs} --out {output.pdf}"
        " --png {output.png} {params.options} > {log} 2>&1"


rule table_ablation:
    input:
        runs="results/summary/ablation/runs.csv",
    output:
        tex="paper_figures/table_ablation.tex",
        csv=report("paper_figures/table_ablation.csv", caption="../report/ablation.rst", category="Tables"),
    log:
        "logs/paper_figures/table_ablation.log",
    benchmark:
        "results/benchmarks/paper_figures/table_ablation.tsv"
    params:
        options=report_options(),
    conda:
        "../../environment.yml"
    shell:
        "python -m icepick table ablation --runs {input.runs} --out {output.tex}"
        " --csv-out {output.csv} {params.options} > {log} 2>&1"


rule fig_criteria:
    input:
        runs="results/summary/criteria/runs.csv",
    output:
        pdf="paper_figures/fig_criteria.pdf",
        png=report("paper_figures/fig_criteria.png", caption="../report/criteria.rst", category="Figures"),
    log:
        "logs/paper_figures/fig_criteria.log",
    benchmark:
        "results/benchmarks/paper_figures/fig_criteria.tsv"
    params:
        options=report_options(),
    conda:
        "../../environment.yml"
    shell:
        "python -m icepick figure criteria --runs {input.runs} --out {output.pdf}"
        " --png {output.png} {params.options} > {log} 2>&1"


rule table_criteria:
    input:
        runs="results/summary/criteria/runs.csv",
    output:
        tex="paper_figures/table_criteria.tex",
        csv=report("paper_figures/table_criteria.csv", caption="../report/criteria.rst", category="Tables"),
    log:
        "logs/paper_figures/table_criteria.log",
    benchmark:
        "results/benchmarks/paper_figures/table_criteria.tsv"
    params:
        options=report_options(),
    conda:
        "../../environment.yml"
    shell:
        "python -m icepick table criteria --runs {input.runs} --out {output.tex}"
        " --csv-out {output.csv} {params.options} > {log} 2>&1"


rule claims:
    input:
        runs="results/summary/runs.csv",
        weight_shift="results/summary/weight_shift.csv",
        pretrain="results/summary/pretrain.csv",
    output:
        md="paper_figures/claims.md",
        csv=report("paper_figures/claims.csv", caption="../report/claims.rst", category="Claims"),
    log:
        "logs/paper_figures/claims.log",
    benchmark:
        "results/benchmarks/paper_figures/claims.tsv"
    params:
        options=report_options(),
    conda:
        "../../environment.yml"
    shell:
        "python -m icepick claims --runs {input.runs} --weight-shift {input.weight_shift}"
        " --pretrain {input.pretrain} --out {output.md} --csv-out {output.csv} {params.options} > {log} 2>&1"
